"""Browser-side test code: real modules that run inside the page's Pyodide.

A browser test calls a function here with
``pypage.call("tests.pyodide.<module>:<function>", **kwargs)``
(see :meth:`tests.conftest.PyPage.call`): the modules are copied into
Pyodide's file system, imported, and the function's JSON-able result comes
back to the test. ruff and mypy check these modules like any other code.
"""

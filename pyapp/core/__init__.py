"""Sans-I/O protocol logic: no browser, no clock, no sockets.

Everything here runs the same under CPython (the unit tests) and Pyodide (the
page). Time is passed in as ``now`` (seconds, float); bytes go in and typed
events come out. ``tests/unit/test_boundary.py`` keeps it that way.
"""

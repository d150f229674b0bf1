"""Page side of tests/browser/test_doc_examples.py (called with ``pypage.call``).

The doc examples themselves run as extracted text in the page's globals; this
module only measures around them, from its own namespace, so nothing it imports
leaks into the globals an example could lean on.
"""

from __future__ import annotations

from pyapp.browser import _ffi


def live_proxies() -> int:
    """How many FFI proxies pyapp holds alive now."""
    return _ffi.live_proxies()

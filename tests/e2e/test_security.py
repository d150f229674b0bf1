"""End to end: the real app in Firefox and Chromium authenticates (by itself) and encrypts across engines.

The page side is tests/pyodide/app_security_cases.py (called with ``pypage.call``).
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import new_pypage, wait_until

pytestmark = pytest.mark.e2e

PEER_ID = re.compile(r"^[a-z2-7]{4}(-[a-z2-7]{4}){5}$")

PAGE = "tests.pyodide.app_security_cases"


def pill(page) -> str:
    return page.page.locator("#identity").inner_text()


def test_firefox_and_chromium_authenticate_and_encrypt_through_the_app(firefox, chromium, server):
    room = "sec-" + uuid.uuid4().hex[:10]
    ff = new_pypage(firefox, server, f"/?room={room}")
    cr = new_pypage(chromium, server, f"/?room={room}")
    try:
        for p in (ff, cr):
            wait_until(lambda p=p: p.page.locator("#peers li .state").all_inner_texts() == ["connected"],
                       timeout=30)
            wait_until(lambda p=p: PEER_ID.match(pill(p)), timeout=10)
        ff.call(f"{PAGE}:start_secure_hello", text="sealed in firefox")
        cr.call(f"{PAGE}:start_secure_hello", text="sealed in chromium")
        for p in (ff, cr):
            wait_until(lambda p=p: p.call(f"{PAGE}:secure_hello_done"), timeout=30)
        a = ff.call(f"{PAGE}:secure_hello_result")
        b = cr.call(f"{PAGE}:secure_hello_result")
        # Each side verified the other's PeerId, the one the other page shows in its pill.
        assert a["me"] == pill(ff) and b["me"] == pill(cr)
        assert a["peer"] == b["me"] and b["peer"] == a["me"]
        assert max(a["auth_s"], b["auth_s"]) < 5
        assert a["th"] == b["th"]
        assert sorted([a["role"], b["role"]]) == ["ANSWERER", "OFFERER"]
        assert a["alg"] == b["alg"] == "ED25519"  # both engines have Ed25519 in WebCrypto
        assert a["got"] == "sealed in chromium" and b["got"] == "sealed in firefox"
        assert a["wire"] == len("sealed in firefox") + 33  # an envelope went over the wire
    finally:
        for p in (ff, cr):
            errors = [c for c in p.console if c.startswith("pageerror")]
            p.page.context.close()
            assert not errors, errors

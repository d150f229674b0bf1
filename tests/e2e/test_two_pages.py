"""End to end: the real server, two pages (desktop + emulated phone), the real UI."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ServerProcess, new_pypage, wait_until
from tests.server_cases import CASES, run_case

pytestmark = pytest.mark.e2e

PAGE = "tests.pyodide.app_page_cases"
"""The page side of these tests (a real module, ruff and mypy checked)."""


def phone_context_args(playwright_instance) -> dict:
    device = dict(playwright_instance.devices["Pixel 7"])
    device.pop("default_browser_type", None)
    return device


def peer_states(pypage) -> list[str]:
    return pypage.page.locator("#peers li .state").all_inner_texts()


def verifications(pypage) -> list[str]:
    return pypage.page.evaluate("() => [...document.querySelectorAll('#peers li.peer')]"
                                ".map(li => li.dataset.verification)")


def safety_codes(pypage) -> list[str]:
    return pypage.page.locator("#peers li .code .digits").all_inner_texts()


def messages(pypage) -> list[str]:
    return pypage.page.locator("#messages li").all_inner_texts()


def chat(sender, receiver, text: str, tap: bool = False) -> None:
    page = sender.page
    page.locator("#message").fill(text)
    wait_until(lambda: page.locator("#send").is_enabled(), timeout=15)
    if tap:
        page.locator("#send").tap()
    else:
        page.locator("#send").click()
    wait_until(lambda: any(text in m for m in messages(receiver)), timeout=10)


@pytest.fixture
def room() -> str:
    return "e2e-" + uuid.uuid4().hex[:10]


def open_pair(first_browser, second_browser, server, room, playwright_instance, phone_second=True):
    first = new_pypage(first_browser, server, f"/?room={room}")
    args = phone_context_args(playwright_instance) if phone_second else {}
    second = new_pypage(second_browser, server, f"/?room={room}", **args)
    for p in (first, second):
        wait_until(lambda p=p: peer_states(p) == ["connected"], timeout=30)
        wait_until(lambda p=p: verifications(p) == ["verified"], timeout=20)
    return first, second


def close_pages(*pages) -> None:
    for p in pages:
        foreign = p.foreign_requests()
        errors = [c for c in p.console if c.startswith("pageerror")]
        p.page.context.close()
        assert not foreign, f"requests to other origins: {foreign}"
        assert not errors, errors


def test_desktop_and_phone_chat_through_the_server(chromium, server, room, playwright_instance):
    desktop, phone = open_pair(chromium, chromium, server, room, playwright_instance)
    try:
        # The phone page really is an emulated phone, laid out at phone width.
        assert phone.page.evaluate("() => navigator.userAgentData.mobile") is True
        assert phone.page.evaluate("() => document.documentElement.clientWidth") < 500
        assert phone.page.locator("#send").bounding_box()["height"] >= 44  # touch-sized
        chat(desktop, phone, "hello from the desktop")
        chat(phone, desktop, "hello from the phone", tap=True)
        # One identity per user: the phone lists the desktop under the PeerId the
        # desktop shows as its own; the signaling session id is only routing detail.
        desk_pid = desktop.page.locator("#identity").inner_text().replace("-", "")
        assert phone.page.locator(f'#peers li[data-peer-id="{desk_pid}"]').count() == 1
        session = desktop.page.locator("#signaling-state").get_attribute("data-session")
        assert phone.page.locator(f'#peers li[data-peer="{session}"]').count() == 1
        assert session not in desktop.page.locator("header").inner_text()
        assert desktop.page.locator("#signaling-state").inner_text() == "open"
        assert safety_codes(desktop) == safety_codes(phone) and len(safety_codes(phone)) == 1
    finally:
        close_pages(desktop, phone)


def test_firefox_desktop_and_chromium_phone(firefox, chromium, server, room, playwright_instance):
    ff = new_pypage(firefox, server, f"/?room={room}")
    phone = new_pypage(chromium, server, f"/?room={room}", **phone_context_args(playwright_instance))
    try:
        for p in (ff, phone):
            wait_until(lambda p=p: peer_states(p) == ["connected"], timeout=30)
            wait_until(lambda p=p: verifications(p) == ["verified"], timeout=20)
        # Across engines: both verified, the same safety code on both screens.
        assert safety_codes(ff) == safety_codes(phone) and len(safety_codes(ff)[0].split()) == 8
        assert ff.page.evaluate("() => typeof navigator.getBattery") == "undefined"
        # The device card in words: no Network Information API in Firefox, a phone is a phone.
        assert ff.page.locator("#network-estimate").inner_text() == "not reported by this browser"
        assert ff.page.locator("#device-profile").inner_text() == "Desktop · Linux · Firefox"
        assert phone.page.locator("#device-profile").inner_text() == "Phone · Android · Chrome · touch screen"
        chat(ff, phone, "hello from firefox")
        chat(phone, ff, "hello from the phone to firefox", tap=True)
    finally:
        close_pages(ff, phone)


def test_signaling_drop_reconnects_and_chat_continues(chromium, server, room, playwright_instance):
    desktop, phone = open_pair(chromium, chromium, server, room, playwright_instance)
    try:
        before = desktop.call(f"{PAGE}:signaling_client")
        assert before["reconnects"] == 0 and before["state"] == "open", before
        desktop.call(f"{PAGE}:drop_signaling")

        def reconnected() -> bool:
            now = desktop.call(f"{PAGE}:signaling_client")
            return now["reconnects"] >= 1 and now["state"] == "open"

        wait_until(reconnected, timeout=15)
        # Rejoined under the same session id (the peers keep routing to it).
        wait_until(lambda: desktop.call(f"{PAGE}:signaling_client")["peer_id"] == before["peer_id"],
                   timeout=10)
        # The phone was told the desktop left, then that it joined again under the same
        # session id: the link (never dependent on the socket) is adopted back, still verified.
        wait_until(lambda: verifications(phone) == ["verified"], timeout=10)
        # The P2P link never depended on the socket; chat still flows both ways.
        chat(desktop, phone, "after the drop")
        chat(phone, desktop, "phone after the drop")
        # And signaling works again: a third page joins and connects to the desktop.
        third = new_pypage(chromium, server, f"/?room={room}")
        try:
            wait_until(lambda: peer_states(third) == ["connected", "connected"], timeout=30)
            wait_until(lambda: peer_states(desktop) == ["connected", "connected"], timeout=30)
            wait_until(lambda: verifications(third) == ["verified", "verified"], timeout=20)
        finally:
            close_pages(third)
    finally:
        close_pages(desktop, phone)


def test_errors_are_shown_to_the_user(chromium, server):
    page = new_pypage(chromium, server, "/?room=bad/room")
    try:
        wait_until(lambda: page.page.locator("#error").is_visible(), timeout=10)
        assert "invalid room name" in page.page.locator("#error-text").inner_text()
    finally:
        close_pages(page)


def test_a_refused_join_is_shown_in_words(chromium):
    """The signaling server's refusal (here: room full) reaches the user as a sentence with its code."""
    small = ServerProcess("--max-peers-per-room", "1")
    pages = []
    try:
        room = "full-" + uuid.uuid4().hex[:8]
        pages.append(new_pypage(chromium, small, f"/?room={room}"))
        wait_until(lambda: pages[0].page.locator("#signaling-state").get_attribute("data-session"), timeout=15)
        pages.append(new_pypage(chromium, small, f"/?room={room}"))
        second = pages[1].page
        wait_until(lambda: second.locator("#error").is_visible(), timeout=15)
        text = second.locator("#error-text").inner_text()
        assert "room-full" in text and "full" in text.replace("room-full", ""), text
        assert second.locator("#join").is_visible()  # not joined: the user can try another room
    finally:
        close_pages(*pages)
        small.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_server_bad_input(server, name):
    run_case(name, server.url)

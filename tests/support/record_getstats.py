"""Record real ``RTCPeerConnection.getStats()`` dumps for the unit-test fixtures.

Run by hand (it needs the browsers, so it is not a test)::

    .venv/bin/python tests/support/record_getstats.py            # all four dumps
    .venv/bin/python tests/support/record_getstats.py chromium   # one engine

Two peer connections in one blank page (served from 127.0.0.1, a secure context) are connected in JS; ``a`` opens
``DATA_CHANNELS`` data channels, sends ``MESSAGES`` messages of
``MESSAGE_SIZE`` bytes on the first, closes the last, waits and dumps
``[...report.values()]`` of ``a`` into ``tests/fixtures/getstats/<engine>-<kind>.json``
(``kind`` = ``data``: data channels only; ``media``: the same plus a fake camera
video track and a fake microphone track sent from ``a`` to ``b``; for media,
``b``'s report, which holds the inbound-rtp entries, goes to
``<engine>-media-receiver.json``). A ``<engine>-<kind>.meta.json`` next
to it records what the script did, so tests can assert against it.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.browsers import CHROMIUM_ARGS, chromium_path, launch_firefox

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "getstats"

DATA_CHANNELS = 3
MESSAGES = 200
MESSAGE_SIZE = 1000
SETTLE_MS = 3000

# Runs in the page; returns {"stats": [...], "meta": {...}}.
SCRIPT = """
async ([withMedia, channels, messages, size, settleMs]) => {
  const a = new RTCPeerConnection();
  const b = new RTCPeerConnection();
  a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate); };
  b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate); };
  let received = 0, receivedBytes = 0;
  b.ondatachannel = (e) => {
    e.channel.onmessage = (m) => {
      received += 1;
      receivedBytes += (typeof m.data === "string") ? m.data.length : m.data.byteLength;
    };
  };
  let stream = null;
  if (withMedia) {
    stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
    for (const t of stream.getTracks()) a.addTrack(t, stream);
  }
  const dcs = [];
  for (let i = 0; i < channels; i++) dcs.push(a.createDataChannel("chan-" + i));
  const opened = Promise.all(dcs.map((dc) => new Promise((res, rej) => {
    dc.onopen = res; dc.onerror = rej;
  })));
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(offer);
  const answer = await b.createAnswer();
  await b.setLocalDescription(answer);
  await a.setRemoteDescription(answer);
  await opened;
  const payload = "x".repeat(size);
  for (let i = 0; i < messages; i++) dcs[0].send(payload);
  // Wait for the messages to arrive, then let media flow and stats refresh.
  const t0 = Date.now();
  while (received < messages && Date.now() - t0 < 10000) {
    await new Promise((r) => setTimeout(r, 50));
  }
  dcs[channels - 1].close();
  await new Promise((r) => setTimeout(r, settleMs));
  const stats = [...(await a.getStats()).values()];
  const peerStats = [...(await b.getStats()).values()];
  const meta = {
    userAgent: navigator.userAgent,
    withMedia, channelsOpened: channels, channelsClosed: 1,
    messagesSent: messages, messageSize: size,
    bytesSentByScript: messages * size,
    messagesReceivedByPeer: received, bytesReceivedByPeer: receivedBytes,
  };
  if (stream) stream.getTracks().forEach((t) => t.stop());
  a.close(); b.close();
  return {stats, peerStats, meta};
}
"""


class _BlankPage(http.server.BaseHTTPRequestHandler):
    # getUserMedia needs a secure context; http://127.0.0.1 is one, about:blank is not.
    def do_GET(self) -> None:
        body = b"<!doctype html><title>getStats</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


_URL = ""


def _record(browser: Browser, engine: str, kind: str, chromium: bool) -> None:
    context = (
        browser.new_context(permissions=["camera", "microphone"])
        if chromium
        else browser.new_context()
    )
    page = context.new_page()
    page.goto(_URL)
    result: dict[str, Any] = page.evaluate(
        SCRIPT, [kind == "media", DATA_CHANNELS, MESSAGES, MESSAGE_SIZE, SETTLE_MS]
    )
    context.close()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = FIXTURES / f"{engine}-{kind}.json"
    out.write_text(json.dumps(result["stats"], indent=1, sort_keys=True) + "\n")
    (FIXTURES / f"{engine}-{kind}.meta.json").write_text(
        json.dumps(result["meta"], indent=1, sort_keys=True) + "\n"
    )
    if kind == "media":
        # The receiving side: inbound-rtp / remote-outbound-rtp live only here.
        (FIXTURES / f"{engine}-media-receiver.json").write_text(
            json.dumps(result["peerStats"], indent=1, sort_keys=True) + "\n"
        )
    for name, stats in (("sender", result["stats"]), ("receiver", result["peerStats"])):
        types = sorted({s["type"] for s in stats})
        print(f"{engine}-{kind} {name}: {len(stats)} stats, types {types}")


def _chromium(p: Playwright) -> None:
    browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    try:
        for kind in ("data", "media"):
            _record(browser, "chromium", kind, chromium=True)
    finally:
        browser.close()


def _firefox(p: Playwright) -> None:
    browser = launch_firefox(p)
    if browser is None:
        raise RuntimeError("no Firefox ESR (set $FIREFOX or install firefox-esr)")
    try:
        for kind in ("data", "media"):
            try:
                _record(browser, "firefox", kind, chromium=False)
            except Exception as exc:  # media may not work; keep the data dump
                print(f"firefox-{kind}: failed: {exc}", file=sys.stderr)
    finally:
        browser.close()


def main(argv: list[str]) -> None:
    global _URL
    engines = argv or ["chromium", "firefox"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _URL = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as p:
        if "chromium" in engines:
            _chromium(p)
        if "firefox" in engines:
            _firefox(p)


if __name__ == "__main__":
    main(sys.argv[1:])

"""What the page runs in the interop tests (Python source for ``PyPage.py``).

The page joins a room on the real signaling server with pyapp's own
SignalingClient, and answers or dials with pyapp's PeerConnection; politeness
is set by the test so both sides know who takes which role.
"""

from __future__ import annotations

SETUP = """
import asyncio, base64, hashlib, json, js
from pyapp.browser.signaling import SignalingClient
from pyapp.browser.peer import PeerConnection
from pyapp.browser.identity import new_identity
from pyapp.core.security.fingerprint import remote_fingerprints

class Interop:
    def __init__(self):
        self.client = None
        self.pcs = {}
        self.polite = True
        self.channels = []

    async def join(self, room, polite):
        if self.client is not None:
            self.client.close()
        for pc in self.pcs.values():
            pc.close()
        self.pcs, self.polite = {}, polite
        self.client = SignalingClient(f"ws://{js.location.host}/ws", reconnect=False)
        self.client.events.on("signal", self._on_signal)
        welcome = await self.client.join(room)
        return welcome.peer_id

    def pc(self, peer):
        pc = self.pcs.get(peer)
        if pc is None:
            client = self.client
            pc = PeerConnection(signal=lambda m: client.send_signal(peer, m), polite=self.polite)
            self.pcs[peer] = pc
            pc.events.on("datachannel", self.channels.append)
        return pc

    def _on_signal(self, sender, data):
        asyncio.ensure_future(self.pc(sender).handle_signal(data))

    async def channel(self, pc, label, timeout=10):
        for _ in range(int(timeout / 0.02)):
            for ch in list(pc.channels):
                if ch.label == label:
                    return ch
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no channel {label!r}")

    async def fingerprints(self, pc):
        \"\"\"What this engine shows: its SDP lines and getStats' certificates.\"\"\"
        def algs(sdp):
            return [line.split(":", 1)[1].split()[0].lower()
                    for line in sdp.splitlines() if line.startswith("a=fingerprint:")]
        out = {"local_sdp": algs(pc.local_description["sdp"]),
               "remote_sdp": algs(pc.remote_description["sdp"]),
               "remote_bound": [str(f) for f in remote_fingerprints(pc.remote_description["sdp"])]}
        stats = await pc.get_stats_raw()
        by_id = {s.get("id"): s for s in stats}
        certs = {}
        for s in stats:
            if s.get("type") == "transport":
                for side in ("local", "remote"):
                    c = by_id.get(s.get(side + "CertificateId"))
                    if c is not None:
                        der = base64.b64decode(c.get("base64Certificate", "") or "")
                        algo = c.get("fingerprintAlgorithm")
                        digest = hashlib.new(algo.replace("-", ""), der).hexdigest() if der and algo else None
                        certs[side] = {"algorithm": algo, "fingerprint": c.get("fingerprint"),
                                       "has_der": bool(der),
                                       "der_sha256": hashlib.sha256(der).hexdigest() if der else None,
                                       "der_matches": digest is not None and digest.upper() ==
                                                      (c.get("fingerprint") or "").replace(":", "").upper()}
        out["stats"] = certs
        out["stats_types"] = sorted({s.get("type") for s in stats})
        return out

IO = Interop()
"""

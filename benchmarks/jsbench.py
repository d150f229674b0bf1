"""Raw-JS baselines run in the same page as the Python code they are compared with."""

from __future__ import annotations

# Two RTCPeerConnections in one page; sends `count` messages of `size` bytes with the
# same backpressure pyapp uses (wait above 1 MiB buffered, resume below 256 KiB);
# resolves with the milliseconds from the first send to the last byte received.
RAW_TRANSFER = """async ({count, size, high, low, ordered}) => {
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const ch = a.createDataChannel("raw", {ordered});
  const remote = new Promise((r) => (b.ondatachannel = (e) => r(e.channel)));
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  const rc = await remote;
  rc.binaryType = "arraybuffer";
  if (ch.readyState !== "open") await new Promise((r) => (ch.onopen = r));
  const total = count * size;
  let got = 0;
  const done = new Promise((r) => (rc.onmessage = (e) => { got += e.data.byteLength; if (got >= total) r(); }));
  const buf = new Uint8Array(size);
  ch.bufferedAmountLowThreshold = low;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    if (ch.bufferedAmount > high) await new Promise((r) => (ch.onbufferedamountlow = r));
    ch.send(buf);
  }
  await done;
  const ms = performance.now() - t0;
  a.close(); b.close();
  return ms;
}"""

# Python run in the page: time `count` messages of `size` bytes from `sender` (anything
# with `await send()`) until `receiver` (anything with a `message` event) has them all.
# With `batch`, the sender hands `batch` messages at a time to `await send_many()`
# (DataChannel: one FFI crossing per batch, still one SCTP message per item).
PY_TIMED_TRANSFER = """
import asyncio, js
async def _timed_transfer(sender, receiver, count, size, batch=0):
    total = count * size
    state = {"got": 0}
    done = asyncio.get_event_loop().create_future()
    def on_message(m):
        state["got"] += len(m)
        if state["got"] >= total and not done.done():
            done.set_result(None)
    receiver.events.on("message", on_message)
    chunk = bytes(size)
    t0 = js.performance.now()
    if batch:
        for start in range(0, count, batch):
            await sender.send_many([chunk] * min(batch, count - start))
    else:
        for _ in range(count):
            await sender.send(chunk)
    await done
    return js.performance.now() - t0
"""

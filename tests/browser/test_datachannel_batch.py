"""DataChannel's batched paths: send_many (one FFI crossing per run) and the JS-side inbox.

Received messages wait in a JS-side inbox that Python drains once per task,
packed into one buffer; binary sends go out as views of the Python buffer. These
tests check what must not change for the caller: every message, once, in order,
as ``bytes`` or ``str`` as it was sent, nothing lost around a close, no proxy
left behind.
"""

from __future__ import annotations

from typing import Any

PAIR = """
import asyncio
from pyapp.browser._ffi import live_proxies
from pyapp.browser.loopback import loopback_pair

async def _pair():
    a, b = loopback_pair()
    fut = asyncio.get_event_loop().create_future()
    b.events.on("datachannel", lambda ch: fut.done() or fut.set_result(ch))
    ca = a.create_data_channel("batch")
    cb = await asyncio.wait_for(fut, 10)
    await ca.wait_open(10)
    return a, b, ca, cb
"""


def test_send_many_mixed_messages_arrive_in_order(pypage: Any) -> None:
    pypage.py(PAIR)
    result = pypage.py("""
base = live_proxies()
a, b, ca, cb = await _pair()
msgs = []
for i in range(3000):
    if i % 97 == 0:
        msgs.append(f"text {i}")
    elif i % 101 == 0:
        msgs.append(memoryview(bytes(range(256)) * 4)[::2])   # not contiguous
    elif i % 7 == 0:
        msgs.append(bytearray(i.to_bytes(4, "big") * 300))
    else:
        msgs.append(i.to_bytes(4, "big") + bytes(96))
await ca.send_many(msgs)
got = []
while len(got) < len(msgs):
    got.append(await asyncio.wait_for(cb.receive(), 10))
want = [m if isinstance(m, str) else bytes(m) for m in msgs]
same = got == want
types_ok = all(type(g) is (str if isinstance(m, str) else bytes) for g, m in zip(got, msgs))
counts = [ca.messages_sent, cb.messages_received, ca.bytes_sent == cb.bytes_received]
a.close(); b.close()
await asyncio.sleep(0.1)
[same, types_ok, counts, live_proxies() - base]
""")
    assert result == [True, True, [3000, 3000, True], 0]


def test_many_events_and_large_messages(pypage: Any) -> None:
    pypage.py(PAIR)
    result = pypage.py("""
a, b, ca, cb = await _pair()
seen = []
done = asyncio.get_event_loop().create_future()
def on_message(m):
    seen.append(m)
    if len(seen) == 2002 and not done.done():
        done.set_result(None)
cb.events.on("message", on_message)
big = bytes(range(256)) * 1024          # 256 KiB, above the pack limit
for i in range(1000):
    ca.send_nowait(i.to_bytes(2, "big"))
await ca.send(big)
await ca.send_many([b"x" * 10] * 1000 + [big])
await asyncio.wait_for(done, 20)
order = [int.from_bytes(m, "big") for m in seen[:1000]] == list(range(1000))
a.close(); b.close()
[order, seen[1000] == big, seen[1001:2001] == [b"x" * 10] * 1000, seen[2001] == big]
""", timeout=60)
    assert result == [True, True, True, True]


def test_messages_before_close_are_delivered_first(pypage: Any) -> None:
    """The remote closes right after a burst has left: every message comes before 'close'."""
    pypage.py(PAIR)
    result = pypage.py("""
a, b, ca, cb = await _pair()
log = []
cb.events.on("message", lambda m: log.append(len(m)))
cb.events.on("close", lambda: log.append("close"))
await ca.send_many([bytes(50)] * 500)
while ca.buffered_amount:        # handed to SCTP; the close follows them on the wire
    await asyncio.sleep(0)
ca.close()
await asyncio.wait_for(cb.wait_closed(), 10)
a.close(); b.close()
[log.count(50), log[-1], log.index("close")]
""")
    assert result == [500, "close", 500]


def test_send_many_too_large_sends_what_came_before(pypage: Any) -> None:
    pypage.py(PAIR)
    result = pypage.py("""
from pyapp.exceptions import MessageTooLargeError
a, b, ca, cb = await _pair()
limit = ca.max_message_size
try:
    await ca.send_many([b"a", "b", b"c", bytes(limit + 1), b"never"])
    raised = None
except MessageTooLargeError as exc:
    raised = type(exc).__name__
await ca.send(b"after")
got = [await asyncio.wait_for(cb.receive(), 10) for _ in range(4)]
a.close(); b.close()
[raised, [[type(g).__name__, g if isinstance(g, str) else g.decode()] for g in got]]
""")
    assert result == ["MessageTooLargeError",
                      [["bytes", "a"], ["str", "b"], ["bytes", "c"], ["bytes", "after"]]]

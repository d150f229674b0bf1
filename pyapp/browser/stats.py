"""``get_statistics``: one ``getStats()`` snapshot of a PeerConnection, parsed and typed.

The browser side of :mod:`pyapp.core.stats`: it asks the RTCPeerConnection for
its report, hands the stats to :func:`~pyapp.core.stats.parse_stats` with the
current time, and fills ``channels`` from the connection's
:class:`~pyapp.browser.mux.MuxSession` (when it has one) with the per-logical-
channel counters.

The report is a JS ``Map``. Converting every entry with ``to_py`` costs one FFI
round trip per stat (and certificates carry kilobytes of base64), so a small JS
helper keeps only the stat types and fields the parser reads, and of the
candidate pairs only the selected one when the transport names it and counts
the bytes (Chromium: 8 entries instead of ~20), and turns them into one JSON
string: one call, one ``json.loads``.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    from pyapp.browser.stats import get_statistics

    a, b = await connected_pair()
    chat = a.create_data_channel("chat")
    await chat.wait_open()
    await chat.send(b"x" * 1000)
    stats = await get_statistics(a)          # or: await a.get_statistics()
    print(stats.bytes_sent, stats.round_trip_time, stats.local_candidate_type)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import js

from pyapp.browser._ffi import await_js, call_js
from pyapp.browser.peer import CLOSED_MESSAGE
from pyapp.core.stats import ChannelStatistics, ConnectionStatistics, parse_stats
from pyapp.exceptions import ConnectionClosedError

if TYPE_CHECKING:
    from pyapp.browser.mux import MuxSession
    from pyapp.browser.peer import PeerConnection
    from pyapp.core.mux import ChannelStats

__all__ = [
    "STAT_TYPES",
    "channel_statistics",
    "get_statistics",
    "stats_poller",
    "STAT_FIELDS",
    "mux_session",
    "report_json",
    "request_report",
]

#: The getStats entry types :func:`pyapp.core.stats.parse_stats` reads; the rest is skipped.
STAT_TYPES = (
    "transport", "candidate-pair", "local-candidate", "remote-candidate", "peer-connection",
    "data-channel", "inbound-rtp", "outbound-rtp", "remote-inbound-rtp",
)

#: The stat fields the parser reads; everything else is left in the browser.
STAT_FIELDS = (
    "id", "type", "selectedCandidatePairId", "bytesSent", "bytesReceived", "state", "nominated",
    "selected", "currentRoundTripTime", "localCandidateId", "remoteCandidateId", "transportId",
    "candidateType", "protocol", "availableOutgoingBitrate", "iceState", "dtlsState",
    "dataChannelsOpened", "dataChannelsClosed", "label", "dataChannelIdentifier", "messagesSent",
    "messagesReceived", "ssrc", "kind", "packetsReceived", "packetsLost", "jitter", "frameWidth",
    "frameHeight", "framesPerSecond", "packetsSent", "targetBitrate", "qualityLimitationReason",
    "fractionLost", "roundTripTime",
)

# Chromium lists every candidate pair (8 on a two-interface machine) and their
# candidates: 12 of ~20 entries the parser never reads once the transport names
# its selected pair and counts the bytes itself. Those are left out (parse_stats
# gives the same result: tests/browser/test_monitor.py compares both on a real
# report); Firefox (no transport byte counters) keeps every pair.
_FILTER_JS = f"""const keep = new Set({json.dumps(list(STAT_TYPES))});
const fields = {json.dumps(list(STAT_FIELDS))};
const count = (v) => typeof v === "number" && v >= 0 && isFinite(v);
const toJson = (report, all) => {{
  const out = [], pairs = [], candidates = [], transports = [];
  for (const s of report.values()) {{
    if (!keep.has(s.type)) continue;
    if (s.type === "candidate-pair") pairs.push(s);
    else if (s.type === "local-candidate" || s.type === "remote-candidate") candidates.push(s);
    else {{ if (s.type === "transport") transports.push(s); out.push(s); }}
  }}
  const ids = new Set(pairs.map((p) => p.id));
  const reduce = !all && transports.length > 0
    && transports.every((t) => ids.has(t.selectedCandidatePairId))
    && transports.some((t) => count(t.bytesSent)) && transports.some((t) => count(t.bytesReceived));
  if (!reduce) return JSON.stringify(out.concat(pairs, candidates), fields);
  const chosen = new Set(transports.map((t) => t.selectedCandidatePairId)), used = new Set();
  for (const p of pairs) if (chosen.has(p.id)) {{ out.push(p); used.add(p.localCandidateId); used.add(p.remoteCandidateId); }}
  for (const c of candidates) if (used.has(c.id)) out.push(c);
  return JSON.stringify(out, fields);
}};"""

_TO_JSON: Any = None
_POLLER: Any = None


def _to_json_fn() -> Any:
    global _TO_JSON
    if _TO_JSON is None:
        _TO_JSON = js.Function.new("report", "all", _FILTER_JS + "return toJson(report, all);")
    return _TO_JSON


def stats_poller(pc: PeerConnection, done: Any, fail: Any) -> Any:
    """A JS object whose ``poll(token)`` runs getStats and calls ``done(token, json_text)``
    or ``fail(token, error)``; after ``cancel()`` it calls neither.

    For periodic polling without a Promise-to-Future bridge per poll: ``done`` and
    ``fail`` are long-lived proxies (owned by the caller), and ``json_text`` is
    what :func:`report_json` would return, still as text.
    """
    global _POLLER
    if _POLLER is None:
        _POLLER = js.Function.new("pc", "done", "fail", _FILTER_JS + """
            let alive = true;
            return {
              poll(token) {
                pc.getStats().then(
                  (report) => { if (alive) done(token, toJson(report, false)); },
                  (error) => { if (alive) fail(token, error); });
              },
              cancel() { alive = false; },
            };""")
    if pc.closed:
        raise ConnectionClosedError(CLOSED_MESSAGE)
    return _POLLER(pc.js_pc, done, fail)


def request_report(pc: PeerConnection) -> Any:
    """Start ``getStats()`` on ``pc``: the JS Promise of the report (a JS Map).

    Raises ConnectionClosedError when the connection is closed.
    """
    return pc.get_stats_report()


def report_json(report: Any, *, every_pair: bool = False) -> list[dict[str, Any]]:
    """The stats of a getStats report (JS Map) that the parser reads, as plain dicts.

    Candidate pairs other than the transport's selected one (and their
    candidates) are left out when the transport counts the bytes itself, since
    :func:`~pyapp.core.stats.parse_stats` reads nothing else of them;
    ``every_pair=True`` keeps them all.
    """
    data = json.loads(str(call_js(_to_json_fn(), report, every_pair)))
    return data if isinstance(data, list) else []


def channel_statistics(session: MuxSession | None) -> tuple[ChannelStatistics, ...]:
    """Counters of every live logical channel of ``session`` (empty without a session)."""
    if session is None:
        return ()
    return tuple(_channel(label, s) for label, s in session.channel_stats())


def _channel(label: str, s: ChannelStats) -> ChannelStatistics:
    return ChannelStatistics(
        label=label,
        channel_id=s.channel_id,
        messages_sent=s.messages_sent,
        messages_received=s.messages_received,
        bytes_sent=s.bytes_sent,
        bytes_received=s.bytes_received,
        queued_bytes=s.queued_bytes,
        # Outbound drops (unreliable under pressure / past lifetime) plus inbound
        # unreliable messages discarded for missing fragments.
        dropped=s.messages_dropped + s.messages_incomplete,
        queueing_delay_ms=(s.queueing_delay_mean * 1000.0) if s.messages_sent else None,
    )


def mux_session(pc: PeerConnection) -> MuxSession | None:
    """The MuxSession of ``pc``'s connection if one was created (never creates one)."""
    return pc.connection.mux


async def get_statistics(pc: PeerConnection, *, session: MuxSession | None = None,
                         now: Callable[[], float] = time.monotonic) -> ConnectionStatistics:
    """A :class:`~pyapp.core.stats.ConnectionStatistics` snapshot of ``pc``.

    ``timestamp`` is ``now()`` (seconds, monotonic by default) when the report
    arrived. Fields the browser does not report are None (Firefox: no transport
    byte counters, no ``availableOutgoingBitrate``). ``channels`` lists the
    multiplexer's logical channels (``session``, else the connection's). Raises ConnectionClosedError on a closed
    connection and BrowserError if ``getStats`` fails.

    Example::

        stats = await get_statistics(pc)
        for ch in stats.channels:
            print(ch.label, ch.bytes_sent, ch.queued_bytes, ch.dropped)
    """
    report = await await_js(request_report(pc))
    stats = parse_stats(report_json(report), now())
    channels = channel_statistics(session if session is not None else mux_session(pc))
    if channels:
        stats = replace(stats, channels=channels)
    return stats

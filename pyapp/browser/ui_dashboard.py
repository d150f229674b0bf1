"""The page's "Connection quality" card (``#dashboard`` in ``web/index.html``).

:func:`bind_dashboard` follows ``APP.peers``: every connected, verified peer gets a
:class:`~pyapp.browser.mux.MuxSession` (both pages do this, which is what a
multiplexer needs), a probe responder, and a
:class:`~pyapp.browser.monitor.QualityMonitor` polling once a second with
in-band probes, registered with the page's PowerManager (so power saving slows
it to 5 s, a hidden page to 10 s). Once a second at most, the card shows

* ``#charts`` -- RTT, loss, jitter, score and throughput over the last five
  minutes, one line per peer, drawn by uPlot (``static/vendor``, loaded on
  first use with ``dashboard.js``; nothing comes from a CDN);
* ``#channel-table`` -- one row per application channel: every logical channel
  of a peer's multiplexer and every native data channel (``native`` in the
  channel column). Internal channels -- labels starting ``pyapp-``: the probe
  channel (one per direction), the mux transports, the authentication channel
  -- are not listed;
* ``#export-timeline`` -- downloads every peer's timeline as JSON (a Blob URL).

Example (what ``app.start()`` does)::

    from pyapp.browser.ui_dashboard import bind_dashboard
    dashboard = await bind_dashboard(APP)
    print(dashboard.export_json())      # what the export button downloads
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import js
from pyodide.ffi import to_js

from pyapp.browser._ffi import ProxyOwner, _report, await_js, is_null, js_object, spawn
from pyapp.browser.monitor import QualityMonitor, TimelinePoint, answer_probes
from pyapp.exceptions import PyAppError

if TYPE_CHECKING:
    from pyapp.browser.app import App
    from pyapp.browser.connection import Connection
    from pyapp.browser.power import PowerManager

__all__ = ["RENDER_INTERVAL", "WINDOW_SECONDS", "Dashboard", "bind_dashboard", "current_dashboard"]

#: Seconds between renders (and peer checks).
RENDER_INTERVAL = 1.0
#: How far back the charts reach.
WINDOW_SECONDS = 300.0

_SCRIPTS = ("vendor/uPlot.iife.min.js", "dashboard.js")
_STYLES = ("vendor/uPlot.min.css",)
INTERNAL_PREFIX = "pyapp-"
"""Labels reserved for pyapp's own channels (probes, mux transports, authentication)."""

_DASHBOARD: Dashboard | None = None
_LOADER: Any = None


def _el(element_id: str) -> Any:
    el = js.document.getElementById(element_id)
    return None if is_null(el) else el


def current_dashboard() -> Dashboard | None:
    """The bound dashboard (None before :func:`bind_dashboard` ran)."""
    return _DASHBOARD


def _loader() -> Any:
    global _LOADER
    if _LOADER is None:
        _LOADER = js.Function.new("src", "css", """
            if (css) {
              const link = document.createElement("link");
              link.rel = "stylesheet"; link.href = src;
              document.head.appendChild(link);
              return Promise.resolve(true);
            }
            return new Promise((ok, fail) => {
              const s = document.createElement("script");
              s.src = src;
              s.onload = () => ok(true);
              s.onerror = () => fail(new Error("cannot load " + src));
              document.head.appendChild(s);
            });""")
    return _LOADER


class Dashboard:
    """Monitors ``app.peers`` and renders the card; see the module docstring.

    ``monitors`` maps peer ids to their running monitors; ``renders`` counts
    renders (tests); ``charts_error`` says why charts are unavailable, if they are.
    """

    def __init__(self, app: App, power: PowerManager | None = None, *,
                 interval: float = RENDER_INTERVAL) -> None:
        self.app = app
        self.power = power
        self.interval = interval
        self.monitors: dict[str, QualityMonitor] = {}
        self.renders = 0
        self.exports = 0
        self.charts_error: str | None = None
        self._charts_loaded = False
        self._loading = False
        self._last_chart_key: tuple[Any, ...] | None = None
        self._last_rows: list[list[str]] | None = None
        self._blob_url: str | None = None
        self._owner = ProxyOwner("dashboard")
        button = _el("export-timeline")
        if button is not None:
            self._owner.listen(button, "click", lambda _e: self.export())
        self._task = spawn(self._loop(), "dashboard")

    # ------------------------------------------------------------------ peers

    def sync(self) -> None:
        """Start a monitor for every connected peer; drop the ones that went away."""
        live: set[str] = set()
        for peer_id, peer in list(self.app.peers.items()):
            pc = peer.pc
            if pc.closed or not getattr(peer, "verified", True):
                continue
            live.add(peer_id)
            monitor = self.monitors.get(peer_id)
            if monitor is not None and monitor.pc is not pc:  # the peer reconnected
                self._forget(peer_id)
                monitor = None
            if monitor is None and pc.connection_state == "connected":
                # No need to wait for the peer's multiplexer: the mux's transport
                # hello holds every frame until the peer's channels exist.
                self.monitors[peer_id] = self._monitor(pc)
        for peer_id in [p for p in self.monitors if p not in live]:
            self._forget(peer_id)

    def _monitor(self, pc: Connection) -> QualityMonitor:
        session = pc.multiplexer()      # the peer's dashboard does the same
        answer_probes(session)
        monitor = pc.start_connection_quality_monitoring(1.0, None, probe=True,
                                                         history=int(WINDOW_SECONDS))
        if self.power is not None:
            self.power.register(monitor)  # set_interval(): 1 s, 5 s saving, 10 s hidden
        return monitor

    def attach_power(self, power: PowerManager) -> None:
        """Follow the power policy from now on (the manager opens after the card binds)."""
        self.power = power
        for monitor in self.monitors.values():
            power.register(monitor)

    def label(self, peer_id: str) -> str:
        """How charts and the table name a peer: its user's name, else the start of its PeerId.

        The signaling session id is routing detail and never shown.
        """
        peer = self.app.peers.get(peer_id)
        auth = getattr(peer, "auth", None)
        name = getattr(peer, "name", "")
        if auth is None:
            return name or peer_id
        short = str(auth.peer_id)[:9]
        return f"{name} ({short})" if name else short

    def _forget(self, peer_id: str) -> None:
        monitor = self.monitors.pop(peer_id)
        if self.power is not None:
            self.power.unregister(monitor)
        monitor.close()

    # ------------------------------------------------------------------ render

    async def _loop(self) -> None:
        while not self._owner.closed:
            try:
                self.sync()
                await self.render()
            except Exception as exc:  # report, keep the card alive
                _report("dashboard", exc)
            await asyncio.sleep(self.interval)

    async def render(self) -> None:
        """Redraw the charts (if there is new data) and the channel table."""
        self.renders += 1
        self._render_table()
        key = tuple((p, len(m.timeline), m.timeline[-1].t if m.timeline else None)
                    for p, m in sorted(self.monitors.items()))
        if key == self._last_chart_key or not any(m.timeline for m in self.monitors.values()):
            return
        container = _el("charts")
        if container is None or not await self._load_charts():
            return
        js.pyappDashboard.update(container, json.dumps(self.chart_data()))
        self._last_chart_key = key

    async def _load_charts(self) -> bool:
        if self._charts_loaded:
            return True
        if self._loading or self.charts_error is not None:
            return False
        self._loading = True
        try:
            for css in _STYLES:
                await await_js(_loader()(css, True))
            for src in _SCRIPTS:
                await await_js(_loader()(src, False))
        except PyAppError as exc:
            self.charts_error = f"charts unavailable: {exc}"
            container = _el("charts")
            if container is not None:
                container.textContent = self.charts_error
            return False
        finally:
            self._loading = False
        self._charts_loaded = True
        return True

    def chart_data(self) -> dict[str, Any]:
        """The five charts as uPlot aligned data: one x axis (unix s), one series per peer."""
        cutoff = time.time() - WINDOW_SECONDS
        peers = sorted(self.monitors)
        points: dict[str, list[TimelinePoint]] = {
            p: [pt for pt in self.monitors[p].timeline if pt.wall >= cutoff] for p in peers}
        xs = sorted({round(pt.wall, 1) for pts in points.values() for pt in pts})
        index = {x: i for i, x in enumerate(xs)}

        def column(peer: str, field: str, scale: float = 1.0) -> list[float | None]:
            col: list[float | None] = [None] * len(xs)
            for pt in points[peer]:
                value = getattr(pt, field)
                col[index[round(pt.wall, 1)]] = None if value is None else round(value * scale, 3)
            return col

        names = [self.label(p) for p in peers]

        def chart(chart_id: str, title: str, unit: str, field: str,
                  scale: float = 1.0, rng: list[float] | None = None) -> dict[str, Any]:
            spec: dict[str, Any] = {"id": chart_id, "title": title, "unit": unit, "series": names,
                                    "data": [xs, *(column(p, field, scale) for p in peers)]}
            if rng is not None:
                spec["range"] = rng
            return spec

        throughput = {"id": "throughput", "title": "Throughput (kbit/s)", "unit": "kbit/s",
                      "series": [f"{n} {d}" for n in names for d in ("out", "in")],
                      "data": [xs, *(column(p, f, 1e-3) for p in peers
                                     for f in ("send_bps", "recv_bps"))]}
        return {"charts": [
            chart("rtt", "Round-trip time (ms)", "ms", "rtt_ms"),
            chart("loss", "Packet loss (%)", "%", "loss_pct", rng=[0, 100]),
            chart("jitter", "Jitter (ms)", "ms", "jitter_ms"),
            chart("score", "Quality score", "", "score", rng=[0, 100]),
            throughput,
        ]}

    def table_rows(self) -> list[list[str]]:
        """The channel table: peer, channel, msgs out/in, bytes out/in, queued, dropped, delay."""
        rows: list[list[str]] = []
        for peer_id, monitor in sorted(self.monitors.items()):
            stats = monitor.statistics
            if stats is None:
                continue
            who = self.label(peer_id)
            for ch in sorted(stats.channels, key=lambda c: c.channel_id):
                if (ch.label or "").startswith(INTERNAL_PREFIX):
                    continue
                delay = "–" if ch.queueing_delay_ms is None else f"{ch.queueing_delay_ms:.1f}"
                rows.append([who, ch.label or f"#{ch.channel_id}",
                             f"{ch.messages_sent}/{ch.messages_received}",
                             f"{ch.bytes_sent}/{ch.bytes_received}",
                             str(ch.queued_bytes), str(ch.dropped), delay])
            for dc in stats.data_channels:
                if (dc.label or "").startswith(INTERNAL_PREFIX):
                    continue
                rows.append([who, f"{dc.label or '?'} (native)",
                             f"{_n(dc.messages_sent)}/{_n(dc.messages_received)}",
                             f"{_n(dc.bytes_sent)}/{_n(dc.bytes_received)}", "–", "–", "–"])
        return rows

    def _render_table(self) -> None:
        table = _el("channel-table")
        rows = self.table_rows()
        if table is None or rows == self._last_rows:
            return
        self._last_rows = rows
        body = table.tBodies.item(0)
        if is_null(body):
            body = table.appendChild(js.document.createElement("tbody"))
        doc = js.document
        new_rows = []
        for row in rows:
            tr = doc.createElement("tr")
            for cell in row:  # textContent: labels come from the peer
                td = doc.createElement("td")
                td.textContent = cell
                tr.appendChild(td)
            new_rows.append(tr)
        body.replaceChildren(*new_rows)

    # ------------------------------------------------------------------ export

    def export_data(self) -> dict[str, Any]:
        """Every peer's timeline (:meth:`QualityMonitor.export_timeline`) with a header."""
        return {
            "format": "pyapp-quality-timeline",
            "version": 1,
            "exported_at": time.time(),
            "peers": {peer_id: m.export_timeline() for peer_id, m in sorted(self.monitors.items())},
            # What the page shows for each peer (its name and the start of its PeerId).
            "labels": {peer_id: self.label(peer_id) for peer_id in sorted(self.monitors)},
        }

    def export_json(self) -> str:
        return json.dumps(self.export_data(), indent=1)

    def export(self) -> str:
        """Download the timeline as ``pyapp-timeline-<time>.json``; returns the Blob URL."""
        self._revoke()
        blob = js.Blob.new(to_js([self.export_json()]), js_object({"type": "application/json"}))
        url = self._blob_url = str(js.URL.createObjectURL(blob))
        link = js.document.createElement("a")
        link.href = url
        link.download = time.strftime("pyapp-timeline-%Y%m%d-%H%M%S.json", time.gmtime())
        js.document.body.appendChild(link)
        link.click()
        link.remove()
        self.exports += 1
        return url

    def _revoke(self) -> None:
        # The previous download has long started; its URL can go.
        if self._blob_url is not None:
            js.URL.revokeObjectURL(self._blob_url)
            self._blob_url = None

    def close(self) -> None:
        """Stop every monitor and the render loop (tests; the page keeps it for its lifetime)."""
        global _DASHBOARD
        self._task.cancel()
        for peer_id in list(self.monitors):
            self._forget(peer_id)
        self._owner.close()
        self._revoke()
        if self._charts_loaded and not is_null(getattr(js, "pyappDashboard", None)):
            js.pyappDashboard.destroy()
        if _DASHBOARD is self:
            _DASHBOARD = None


def _n(value: int | None) -> str:
    return "–" if value is None else str(value)


async def bind_dashboard(app: App) -> Dashboard | None:
    """Bind the ``#dashboard`` card (None on a page without it)."""
    global _DASHBOARD
    if _DASHBOARD is not None:
        return _DASHBOARD
    if _el("dashboard") is None:
        return None
    from pyapp.browser.power import PowerManager

    # Monitoring starts now; the power policy joins when the manager is open
    # (getBattery() may take long or never answer).
    dashboard = _DASHBOARD = Dashboard(app, None)
    try:
        power = await PowerManager.shared()
    except PyAppError as exc:  # the dashboard works without the battery policy
        _report("dashboard power manager", exc)
        return dashboard
    if not dashboard._owner.closed:
        dashboard.attach_power(power)
    return dashboard

// Connection-quality charts: tiny glue between pyapp.browser.ui_dashboard (Python) and
// uPlot (served from static/vendor/, pinned in package.json). Python owns the data and
// the timing; this file only turns one JSON update into uPlot charts.
//
//   pyappDashboard.update(container, jsonText)
//     jsonText = {"charts": [{"id", "title", "unit", "series": [names], "data": [[x], [y1], ...]}]}
//     x is unix time in seconds; y values may be null (no sample).
//   pyappDashboard.pointCounts()   -> {chartId: number of x values}   (tests)
//   pyappDashboard.destroy()
(() => {
  "use strict";
  const charts = new Map(); // id -> {plot, key, el}
  const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#90a4ae", "#f06292"];

  function options(spec, width) {
    return {
      title: spec.title,
      width,
      height: 150,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: spec.range ? { range: spec.range } : { auto: true } },
      axes: [
        { stroke: "#9fb3c8", grid: { stroke: "#223349" }, ticks: { stroke: "#223349" } },
        { stroke: "#9fb3c8", grid: { stroke: "#223349" }, ticks: { stroke: "#223349" }, size: 45 },
      ],
      series: [
        {},
        ...spec.series.map((name, i) => ({
          label: name,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          value: (_u, v) => (v == null ? "–" : `${+v.toFixed(1)} ${spec.unit}`),
        })),
      ],
    };
  }

  function update(container, jsonText) {
    if (typeof uPlot === "undefined") throw new Error("uPlot is not loaded");
    const spec = JSON.parse(jsonText);
    const seen = new Set();
    for (const c of spec.charts) {
      seen.add(c.id);
      const key = c.series.join("\u0000");
      let entry = charts.get(c.id);
      if (entry && entry.key !== key) {
        entry.plot.destroy();
        entry.el.remove();
        entry = undefined;
      }
      if (!entry) {
        const el = document.createElement("div");
        el.className = "chart";
        el.dataset.chart = c.id;
        container.appendChild(el);
        const width = Math.max(200, Math.floor(el.clientWidth || container.clientWidth || 280));
        const plot = new uPlot(options(c, width), c.data, el);
        charts.set(c.id, { plot, key, el });
      } else {
        entry.plot.setData(c.data);
      }
    }
    for (const [id, entry] of charts) {
      if (!seen.has(id)) {
        entry.plot.destroy();
        entry.el.remove();
        charts.delete(id);
      }
    }
  }

  function pointCounts() {
    const out = {};
    for (const [id, entry] of charts) out[id] = entry.plot.data[0].length;
    return out;
  }

  function destroy() {
    for (const entry of charts.values()) {
      entry.plot.destroy();
      entry.el.remove();
    }
    charts.clear();
  }

  globalThis.pyappDashboard = { update, pointCounts, destroy };
})();

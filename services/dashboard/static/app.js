// IonVeil dashboard page: reads /api/view, re-reads it when /events (SSE) says the org changed.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const org = params.get("org") || "";
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  $("org").value = org;

  const fmt = (v, digits) => (typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–");
  const text = (id, value) => { $(id).textContent = value; };

  function svgEl(name, attrs) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  function drawTrend(trend) {
    const svg = $("trend");
    svg.replaceChildren();
    const pts = (trend && trend.points) || [];
    if (!pts.length) return;
    const t0 = Date.parse(pts[0].timestamp);
    const xs = pts.map((p) => (Date.parse(p.timestamp) - t0) / 3600e3);
    const ys = pts.map((p) => p.value);
    const fx = xs[xs.length - 1] + 1;
    const fy = trend.forecast_next_hour;
    const maxX = Math.max(fx, 1e-9);
    const maxY = Math.max(...ys, fy, 1e-9) * 1.1;
    const sx = (x) => 10 + (x / maxX) * 580;
    const sy = (y) => 190 - (Math.max(y, 0) / maxY) * 180;
    svg.appendChild(svgEl("polyline", {
      points: xs.map((x, i) => `${sx(x)},${sy(ys[i])}`).join(" "),
      fill: "none", stroke: "#58a6ff", "stroke-width": 2 }));
    svg.appendChild(svgEl("line", {
      x1: sx(xs[xs.length - 1]), y1: sy(ys[ys.length - 1]), x2: sx(fx), y2: sy(fy),
      stroke: "#d29922", "stroke-width": 2, "stroke-dasharray": "6 4" }));
    text("trend-meta", `${trend.trend_direction}, ${fmt(trend.slope, 2)} min/h, ` +
      `forecast ${fmt(fy, 1)} min (confidence ${fmt(trend.confidence * 100, 0)} %)`);
  }

  function drawRegions(rows) {
    const body = $("regions").querySelector("tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const v of [r.region, fmt(r.dispatch_count, 0), fmt(r.avg_response, 1),
                       fmt(r.p90_response, 1), fmt(r.sla_compliance * 100, 1) + " %"]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function drawHeatmap(cells, coverage) {
    const svg = $("heatmap");
    svg.replaceChildren();
    if (!cells.length) return;
    const rows = Math.max(...cells.map((c) => c.row)) + 1;
    const cols = Math.max(...cells.map((c) => c.col)) + 1;
    const max = Math.max(...cells.map((c) => c.value), 1e-9);
    for (const c of cells) {
      const a = c.value / max;
      svg.appendChild(svgEl("rect", {
        x: (c.col * 200) / cols, y: (c.row * 200) / rows, width: 200 / cols,
        height: 200 / rows, fill: `rgba(255, 123, 114, ${a.toFixed(3)})`,
        stroke: "#1b2430", "data-count": c.count }));
    }
    text("coverage", `${coverage.without_coordinates} without coordinates`);
  }

  function drawAlerts(alerts) {
    const list = $("alerts");
    list.replaceChildren();
    for (const a of alerts) {
      const li = document.createElement("li");
      li.className = `sev-${a.severity}`;
      li.textContent = `[${a.severity}] ${a.title || a.alert_id} (${a.status})`;
      list.appendChild(li);
    }
    if (!alerts.length) list.textContent = "none";
  }

  let loading = false, again = false;
  async function refresh() {
    if (!org) { text("status", "choose an org"); return; }
    if (loading) { again = true; return; }
    loading = true;
    try {
      const res = await fetch(`/api/view?org=${encodeURIComponent(org)}`);
      const view = await res.json();
      if (!res.ok) throw new Error(view.error ? view.error.message : res.statusText);
      const k = view.kpis;
      text("kpi-active", String(k.active));
      text("kpi-pending", String(k.pending));
      text("kpi-compliance", k.dispatches_last_hour ? fmt(k.compliance * 100, 1) + " %" : "–");
      text("kpi-avg", k.dispatches_last_hour ? fmt(k.avg_response, 1) + " min" : "–");
      text("kpi-p90", k.dispatches_last_hour ? fmt(k.p90_response, 1) + " min" : "–");
      text("kpi-count", String(k.dispatches_last_hour));
      drawTrend(view.trend);
      drawRegions(view.regions);
      drawHeatmap(view.heatmap, view.coverage);
      drawAlerts(view.snapshot.alerts);
      document.body.dataset.updated = String(Date.now());
    } catch (err) {
      text("status", `error: ${err.message}`);
    } finally {
      loading = false;
      if (again) { again = false; setTimeout(refresh, 100); }
    }
  }

  let timer = null;
  function soon() { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 200); }

  if (org) {
    const events = new EventSource(`/events?org=${encodeURIComponent(org)}`);
    events.addEventListener("hello", () => { $("status").className = "status live";
      text("status", "live"); refresh(); });
    events.addEventListener("update", soon);
    events.onerror = () => { $("status").className = "status"; text("status", "reconnecting…"); };
  }
  refresh();
})();

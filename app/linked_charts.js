// Linked plotly charts, highlighted in the browser (the Streamlit Components v2 part of app/linked_charts.py).
//
// One module, two kinds of instance (data.kind):
// - "chart": one plotly figure (data.figure, a JSON string that only changes with the figure itself, so
//   Streamlit leaves the chart alone while the selection changes). A box / lasso selection or a click on it
//   highlights the selected samples in every chart of its group (larger, opaque, outlined; the others
//   faint, as the figure's layout.meta.highlight says) and reports them to Python as the trigger
//   "select": {rows, seq, epoch, click} (rows: the link ids, customdata[1] when a chart has it, else
//   customdata[0]). The highlight is a canvas above each chart (paintHighlight), plotly's points dimmed by CSS.
// - "selection": the group's selection as Python holds it (search, Clear, a visit); applied the same way,
//   unless it is older than the last selection made here (seq / epoch), which Python has not seen yet. Its
//   "extra" holds, per chart id, selected samples that chart does not draw (a large split's subsample): they
//   are drawn on its highlight canvas too, at the coordinates Python sends, while the chart's figure is the
//   one they were computed for (sig). Hovering one shows its text (hoverExtra) and a click selects it
//   (clickExtra), as plotly does for the points it draws.
//
// plotly.js is the one bundled with the plotly Python package, served by this app's server (data.plotly).

const STORE = "__stdclLinkedCharts";

function groupState(group) {
  const all = (window[STORE] = window[STORE] || {});
  if (!all[group]) {
    all[group] = {
      charts: new Set(),
      rows: null, // Set of selected link ids, or null: no selection
      version: 0, // bumped whenever rows change
      seq: 0, // selections made in this page
      epoch: Math.random().toString(36).slice(2),
      extra: {}, // chart id -> selected samples it does not draw: {sig, rows, ids, x, y, color} (from Python)
    };
  }
  return all[group];
}

function loadPlotly(url) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__stdclPlotlyLoading) {
    window.__stdclPlotlyLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.async = true;
      script.onload = () => (window.Plotly ? resolve(window.Plotly) : reject(new Error(`${url}: no Plotly`)));
      script.onerror = () => {
        window.__stdclPlotlyLoading = null;
        reject(new Error(`could not load plotly.js from ${url}`));
      };
      document.head.appendChild(script);
    });
  }
  return window.__stdclPlotlyLoading;
}

function sortedRows(rows) {
  return Int32Array.from(new Set(rows)).sort();
}

function sameRows(set, rows) {
  if (set === null) return rows.length === 0;
  return set.size === rows.length && rows.every((r) => set.has(r));
}

// The link id of each point of each point trace (traces with customdata), by trace index.
function linkIds(gd) {
  const out = [];
  for (const t of gd._fullData) {
    if (!t.customdata || !t.customdata.length) continue;
    const cd = t.customdata;
    const ids = new Int32Array(cd.length);
    for (let i = 0; i < cd.length; i++) ids[i] = cd[i].length > 1 ? cd[i][1] : cd[i][0];
    out.push({index: t.index, ids});
  }
  return out;
}

// The highlight, drawn without plotly recalculating a trace (a restyle of per-point sizes took ~1 s per chart at
// 50,000 points): the chart's WebGL points are dimmed by CSS and the selected ones drawn on a canvas above it,
// O(selected) per change. gd.__stdclHighlighted: the rows (customdata[0]) drawn highlighted, for tests.
function overlayOf(chart) {
  if (!chart.overlay) {
    const canvas = document.createElement("canvas");
    canvas.className = "stdcl-highlight";
    Object.assign(canvas.style, {position: "absolute", left: "0px", top: "0px", pointerEvents: "none"});
    chart.host.style.position = "relative";
    chart.host.appendChild(canvas);
    chart.overlay = canvas;
  }
  return chart.overlay;
}

function paintHighlight(chart, group) {
  const {gd} = chart;
  const style = (gd.layout.meta && gd.layout.meta.highlight) || null;
  const fl = gd._fullLayout;
  if (!style || !chart.links || !fl || !fl._size) return;
  const rows = chart.linked ? group.rows : null;
  const dim = rows === null ? "" : String(Math.min(1, style.off.opacity / style.opacity));
  // WebGL points (scattergl) or SVG ones (scatter, small charts)
  for (const c of gd.querySelectorAll(".gl-canvas-context, .gl-canvas-focus, .scatterlayer")) c.style.opacity = dim;
  const canvas = overlayOf(chart);
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(fl.width * ratio), height = Math.round(fl.height * ratio);
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, {width, height});
  Object.assign(canvas.style, {left: `${chart.el.offsetLeft}px`, top: `${chart.el.offsetTop}px`,
                               width: `${fl.width}px`, height: `${fl.height}px`});
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const drawn = [];
  chart.extraPoints = []; // the extra points painted: chart pixel position, radius, hover text, colour
  if (rows !== null) {
    const box = fl._size, xa = fl.xaxis, ya = fl.yaxis, on = style.on;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.beginPath();
    ctx.rect(box.l, box.t, box.w, box.h);
    ctx.clip();
    Object.assign(ctx, {globalAlpha: on.opacity, lineWidth: on.line, strokeStyle: "black"});
    for (const {index, ids} of chart.links) {
      const t = gd._fullData[index];
      if (!t || t.visible !== true) continue;
      const color = t.marker.color;
      for (let i = 0; i < ids.length; i++) {
        if (!rows.has(ids[i])) continue;
        const c = typeof color === "string" ? color : color && typeof color[i] === "string" ? color[i] : "#444";
        ctx.beginPath();
        ctx.arc(box.l + xa.l2p(t.x[i]), box.t + ya.l2p(t.y[i]), on.size / 2, 0, 2 * Math.PI);
        ctx.fillStyle = c;
        ctx.fill();
        if (on.line > 0) ctx.stroke();
        drawn.push(Number(t.customdata[i][0]));
      }
    }
    // selected samples outside the points the chart draws (a subsample of a large split), placed by Python
    const extra = group.extra[chart.id];
    if (extra && extra.sig === chart.sig) {
      for (let i = 0; i < extra.ids.length; i++) {
        if (!rows.has(extra.ids[i])) continue;
        const px = box.l + xa.l2p(extra.x[i]), py = box.t + ya.l2p(extra.y[i]);
        ctx.beginPath();
        ctx.arc(px, py, on.size / 2, 0, 2 * Math.PI);
        ctx.fillStyle = extra.color[i];
        ctx.fill();
        if (on.line > 0) ctx.stroke();
        drawn.push(Number(extra.rows[i]));
        const inside = px >= box.l && px <= box.l + box.w && py >= box.t && py <= box.t + box.h;
        if (inside) chart.extraPoints.push({px, py, r: on.size / 2 + 3, id: Number(extra.ids[i]),
                                            text: extra.text ? extra.text[i] : "", color: extra.color[i]});
      }
    }
  }
  gd.__stdclHighlighted = drawn.sort((a, b) => a - b);
  const hovered = chart.hoverPoint;
  if (hovered && !chart.extraPoints.some((p) => p.id === hovered.id)) hoverExtra(chart, null); // no longer drawn
}

// Dark or white text, whichever reads on a background colour "#rrggbb" (as plotly's hover labels choose).
function textOn(background) {
  const m = /^#([0-9a-f]{6})$/i.exec(String(background));
  if (!m) return "white";
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(m[1].slice(i, i + 2), 16) / 255);
  return 0.299 * r + 0.587 * g + 0.114 * b > 0.6 ? "#222" : "white";
}

// A hover label for the extra points (plotly's own hover knows only the points it draws): the nearest one under
// the cursor, its text as plain text (sample names come from users' files), plotly's label hidden meanwhile.
function hoverExtra(chart, ev) {
  const {gd} = chart;
  let best = null;
  if (ev && gd && chart.extraPoints && chart.extraPoints.length && chart.overlay &&
      chart.overlay.style.visibility !== "hidden") {
    const at = gd.getBoundingClientRect(), x = ev.clientX - at.left, y = ev.clientY - at.top;
    let bestD = Infinity;
    for (const p of chart.extraPoints) {
      const d = Math.hypot(p.px - x, p.py - y);
      if (d <= p.r && d < bestD) [best, bestD] = [p, d];
    }
  }
  chart.hoverPoint = best;
  const plotlyLabel = gd && gd.querySelector(".hoverlayer");
  if (plotlyLabel) plotlyLabel.style.visibility = best ? "hidden" : "";
  let label = chart.hoverLabel;
  if (!best) {
    if (label) label.style.display = "none";
    return;
  }
  if (!label) {
    label = chart.hoverLabel = document.createElement("div");
    label.className = "stdcl-extra-hover";
    Object.assign(label.style, {position: "absolute", pointerEvents: "none", zIndex: "10", padding: "3px 6px",
                                borderRadius: "3px", font: "12px sans-serif", whiteSpace: "nowrap",
                                border: "1px solid white"});
    chart.host.appendChild(label);
  }
  label.replaceChildren();
  String(best.text).split("<br>").forEach((line, i) => {
    if (i) label.appendChild(document.createElement("br"));
    label.appendChild(document.createTextNode(line));
  });
  Object.assign(label.style, {display: "block", background: best.color, color: textOn(best.color), left: `${gd.offsetLeft + best.px + 8}px`,
                              top: `${gd.offsetTop + best.py - 10}px`});
}

// A click (press and release within a few pixels, where plotly's click selects: not in box / lasso mode) on the
// extra point under the cursor selects that sample; plotly's click, which would pick a drawn point near it, is
// ignored meanwhile (plotly_click handler).
function clickExtra(chart, down) {
  const p = chart.hoverPoint, mode = chart.gd && chart.gd._fullLayout && chart.gd._fullLayout.dragmode;
  if (!p || down.button !== 0 || !chart.linked || mode === "select" || mode === "lasso") return;
  // plotly covers the page while the button is down (the cursor "leaves" the chart): the press remembers the point
  chart.pressed = p;
  const up = (ev) => {
    window.removeEventListener("mouseup", up, true);
    if (Math.hypot(ev.clientX - down.clientX, ev.clientY - down.clientY) <= 3)
      selectHere(chart, groupState(chart.group), [p.id], true);
    setTimeout(() => (chart.pressed = null), 0); // after plotly's click, which this mouseup precedes
  };
  window.addEventListener("mouseup", up, true);
}

function applyTo(chart, group) {
  const {gd, Plotly} = chart;
  if (!gd || !chart.links) return;
  if (chart.applied === group.version && !chart.clearNative) return;
  if (chart.clearNative) {
    // plotly's own selection (box outline, dimmed points) gives way to the linked highlight
    chart.clearNative = false;
    const indices = chart.links.map((l) => l.index);
    Plotly.update(gd, {selectedpoints: indices.map(() => null)}, {selections: []}, indices);
  }
  paintHighlight(chart, group);
  chart.applied = group.version;
}

function applyAll(group) {
  for (const chart of group.charts) applyTo(chart, group);
}

function setRows(group, rows) {
  group.rows = rows.length ? new Set(rows) : null;
  group.version += 1;
}

function selectionFromPython(data) {
  const group = groupState(data.group);
  const rows = Array.from(data.rows || []);
  // Python has not seen the last selection made here yet: it will send it back
  if (data.epoch === group.epoch && data.seq < group.seq) return;
  const extra = data.extra || {};
  const extraChanged = JSON.stringify(extra) !== JSON.stringify(group.extra);
  group.extra = extra;
  if (sameRows(group.rows, rows)) {
    if (extraChanged) {
      group.version += 1;
      applyAll(group);
    }
    return;
  }
  setRows(group, rows);
  applyAll(group);
}

function selectHere(chart, group, rows, click) {
  rows = Array.from(sortedRows(rows));
  if (!rows.length) return; // an empty selection (a click beside the points) keeps the current one
  group.seq += 1;
  setRows(group, rows);
  chart.clearNative = !click;
  // the page's rerun (count, table, inspector) starts while the charts are highlighted here
  chart.report("select", {rows, seq: group.seq, epoch: group.epoch, click});
  applyAll(group);
}

function pointRows(points) {
  const rows = [];
  for (const p of points || []) {
    const cd = p.customdata;
    if (cd === undefined || cd === null) continue;
    rows.push(Number(cd.length > 1 ? cd[1] : cd.length === 1 ? cd[0] : cd));
  }
  return rows.filter((r) => r >= 0);
}

function draw(chart, data) {
  const group = groupState(data.group);
  const fig = JSON.parse(data.figure);
  const config = Object.assign({displaylogo: false, responsive: true}, data.config || {});
  const Plotly = chart.Plotly;
  const first = !chart.gd;
  if (first) chart.gd = chart.el;
  const done = first
    ? Plotly.newPlot(chart.el, fig.data, fig.layout, config)
    : Plotly.react(chart.el, fig.data, fig.layout, config);
  return Promise.resolve(done).then((gd) => {
    chart.el.style.minHeight = "";
    if (first) {
      gd.on("plotly_selected", (ev) => {
        if (chart.linked && ev && ev.points) selectHere(chart, groupState(chart.group), pointRows(ev.points), false);
      });
      gd.on("plotly_click", (ev) => {
        if (!chart.linked || !ev || !ev.points || chart.pressed) return; // on an extra point: clickExtra
        const rows = pointRows(ev.points).slice(0, 1);
        selectHere(chart, groupState(chart.group), rows, true);
      });
      // the highlight follows the axes: hidden while they move, drawn again once plotly has drawn
      gd.on("plotly_relayouting", () => {
        if (chart.overlay) chart.overlay.style.visibility = "hidden";
        hoverExtra(chart, null);
      });
      chart.onMove = (ev) => hoverExtra(chart, ev);
      chart.onLeave = () => hoverExtra(chart, null);
      chart.onDown = (ev) => clickExtra(chart, ev);
      chart.host.addEventListener("mousedown", chart.onDown, true);
      chart.host.addEventListener("mousemove", chart.onMove);
      chart.host.addEventListener("mouseleave", chart.onLeave);
      gd.on("plotly_afterplot", () => {
        if (chart.overlay) chart.overlay.style.visibility = "";
        if (chart.links) paintHighlight(chart, groupState(chart.group));
      });
    }
    chart.links = linkIds(gd);
    chart.applied = -1;
    group.charts.add(chart);
    applyTo(chart, group);
    gd.setAttribute("data-stdcl-drawn", String(++chart.draws));
  });
}

export default function linkedCharts(component) {
  const {data, parentElement, setTriggerValue} = component;
  if (!data) return undefined;
  if (data.kind === "selection") {
    selectionFromPython(data);
    return undefined;
  }
  let chart = parentElement.__stdclChart;
  if (!chart) {
    const el = document.createElement("div");
    el.className = "stdcl-linked-chart";
    parentElement.appendChild(el);
    chart = parentElement.__stdclChart = {el, host: parentElement, gd: null, links: null, overlay: null, applied: -1,
                                          draws: 0, token: 0};
  }
  const height = data.height || 450;
  if (!chart.gd) chart.el.style.minHeight = `${height}px`; // room kept while plotly.js loads
  chart.group = data.group;
  chart.linked = data.linked !== false;
  chart.id = data.id || "";
  chart.sig = data.sig || "";
  chart.report = (event, value) => setTriggerValue(event, value);
  const token = ++chart.token;
  chart.el.setAttribute("data-stdcl-pending", "1"); // until drawn: browser tests wait for it (IDLE_JS)
  loadPlotly(data.plotly)
    .then((Plotly) => {
      if (token !== chart.token || chart.disposed) return undefined;
      chart.Plotly = Plotly;
      return draw(chart, data);
    })
    .catch((err) => {
      chart.el.textContent = `The chart could not be drawn: ${err && err.message ? err.message : err}`;
      console.error(err);
    })
    .finally(() => {
      if (token === chart.token) chart.el.removeAttribute("data-stdcl-pending");
    });
  return () => {
    chart.disposed = true;
    groupState(chart.group).charts.delete(chart);
    if (chart.gd && chart.Plotly) chart.Plotly.purge(chart.gd);
    if (chart.overlay) chart.overlay.remove();
    if (chart.hoverLabel) chart.hoverLabel.remove();
    if (chart.onMove) chart.host.removeEventListener("mousemove", chart.onMove);
    if (chart.onLeave) chart.host.removeEventListener("mouseleave", chart.onLeave);
    if (chart.onDown) chart.host.removeEventListener("mousedown", chart.onDown, true);
    delete parentElement.__stdclChart;
  };
}

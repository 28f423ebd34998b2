// Small SVG charts (no library): line charts of metric series and a bar chart.
const NS = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs = {}) => {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
};
// Okabe–Ito, with a dash pattern per series so lines differ without colour too.
const COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4"];
const W = 420, H = 200, L = 48, R = 8, T = 24, B = 26; // the legend sits above the plot

const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toPrecision(3));

// series: [{name, points: [[x, y], ...]}]
export function lineChart(title, series) {
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", "aria-label": title });
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const desc = svgEl("title");
  desc.textContent = `${title}: ${series.map((s) => `${s.name} last ${s.points.length ? fmt(s.points[s.points.length - 1][1]) : "—"}`).join(", ")}`;
  svg.append(desc);
  if (!pts.length) return svg;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const [v, y] of [[y1, T + 4], [y0, H - B]]) {
    const t = svgEl("text", { x: L - 4, y, "text-anchor": "end", class: "tick" });
    t.textContent = fmt(v);
    svg.append(t);
  }
  const xl = svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "tick" });
  xl.textContent = `step ${x1}`;
  svg.append(xl);
  series.forEach((s, i) => {
    const good = s.points.filter(([, y]) => Number.isFinite(y));
    if (!good.length) return;
    svg.append(svgEl("polyline", { points: good.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), fill: "none",
      stroke: COLORS[i % COLORS.length], "stroke-width": 2, "stroke-dasharray": DASHES[i % DASHES.length],
      "data-series": s.name, "data-points": good.length }));
    const lx = L + 6 + i * 110;
    svg.append(svgEl("line", { x1: lx, y1: 10, x2: lx + 18, y2: 10, stroke: COLORS[i % COLORS.length],
      "stroke-width": 2, "stroke-dasharray": DASHES[i % DASHES.length] }));
    const lt = svgEl("text", { x: lx + 22, y: 14, class: "legend" });
    lt.textContent = s.name;
    svg.append(lt);
  });
  return svg;
}

// bars: [{label, value}]
export function barChart(title, bars) {
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", "aria-label": title });
  const d = svgEl("title");
  d.textContent = `${title}: ${bars.map((b) => `${b.label}: ${b.value}`).join(", ")}`;
  svg.append(d);
  const max = Math.max(1, ...bars.map((b) => b.value));
  const bw = (W - L - R) / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const h = (b.value / max) * (H - T - B);
    const r = svgEl("rect", { x: L + i * bw + 2, y: H - B - h, width: Math.max(1, bw - 4), height: h, fill: COLORS[0], "data-value": b.value });
    const tip = svgEl("title");
    tip.textContent = `${b.label}: ${b.value}`;
    r.append(tip);
    svg.append(r);
    const t = svgEl("text", { x: L + i * bw + bw / 2, y: H - 10, "text-anchor": "middle", class: "tick" });
    t.textContent = b.label;
    svg.append(t);
  });
  const mt = svgEl("text", { x: L - 4, y: T + 4, "text-anchor": "end", class: "tick" });
  mt.textContent = String(max);
  svg.append(mt, svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  return svg;
}

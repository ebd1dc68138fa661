// Daily cost chart by provider: stacked bars drawn as inline SVG (no library, no network).

import { clear, fmtUsd, h, svg } from "./dom.js";

const PALETTE = ["#2f5fd0", "#7b3fc4", "#b7791f", "#1e7d3a", "#c2410c", "#0e7490", "#be185d", "#4d7c0f", "#6b7280"];

/**
 * Render `rows` ([{date, provider, cost_usd}]) into `container` as a stacked bar chart with a legend and a
 * text alternative (a visually simple table is exposed through aria-label / <title> / <desc>).
 */
export function renderCostChart(container, rows, { days = 14 } = {}) {
  clear(container);
  const data = new Map(); // date -> Map(provider -> cost)
  const providers = new Set();
  for (const r of rows || []) {
    const date = String(r.date ?? r.day ?? "").slice(0, 10);
    const provider = String(r.provider ?? r.key ?? "unknown");
    const cost = Number(r.cost_usd ?? r.costUsd ?? r.cost ?? 0);
    if (!date || !Number.isFinite(cost)) continue;
    providers.add(provider);
    if (!data.has(date)) data.set(date, new Map());
    const m = data.get(date);
    m.set(provider, (m.get(provider) || 0) + cost);
  }
  const known = [...data.keys()].sort();
  if (known.length) {
    // a continuous run of days (at least a week) ending at the latest day, so gaps show as empty days
    const end = new Date(known[known.length - 1] + "T00:00:00Z");
    const span = Math.max(7, Math.min(days, Math.round((end - new Date(known[0] + "T00:00:00Z")) / 864e5) + 1));
    for (let i = 0; i < span; i++) {
      const d = new Date(end.getTime() - i * 864e5).toISOString().slice(0, 10);
      if (!data.has(d)) data.set(d, new Map());
    }
  }
  const dates = [...data.keys()].sort().slice(-days);
  if (!dates.length) {
    container.appendChild(h("p", { class: "muted", text: "No cost recorded yet." }));
    return;
  }
  const provs = [...providers].sort();
  const color = new Map(provs.map((p, i) => [p, PALETTE[i % PALETTE.length]]));
  const totals = dates.map((d) => [...data.get(d).values()].reduce((a, b) => a + b, 0));
  const max = Math.max(...totals) || 1;

  const W = 640;
  const H = 240;
  const pad = { l: 64, r: 12, t: 12, b: 40 };
  const plotW = W - pad.l - pad.r;
  const plotH = H - pad.t - pad.b;
  const slot = plotW / dates.length;
  const barW = Math.max(4, Math.min(48, slot * 0.6));

  const description = dates.map((d, i) => `${d}: ${fmtUsd(totals[i])}`).join("; ");
  const root = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "cost-chart-title cost-chart-desc", class: "cost-chart" },
    svg("title", { id: "cost-chart-title", text: "Daily cost by provider" }),
    svg("desc", { id: "cost-chart-desc", text: description }),
  );
  // Axis and grid lines.
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const v = (max * i) / ticks;
    const y = pad.t + plotH - (plotH * i) / ticks;
    root.appendChild(svg("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, stroke: i ? "#e5e7eb" : "#9ca3af", "stroke-width": 1 }));
    root.appendChild(svg("text", { x: pad.l - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#5d6678", text: fmtUsd(v) }));
  }
  dates.forEach((d, i) => {
    const x = pad.l + slot * i + (slot - barW) / 2;
    let y = pad.t + plotH;
    const g = svg("g", { class: "bar", "data-date": d });
    for (const p of provs) {
      const cost = data.get(d).get(p) || 0;
      if (cost <= 0) continue;
      const hgt = (cost / max) * plotH;
      y -= hgt;
      g.appendChild(
        svg("rect", { x, y, width: barW, height: Math.max(hgt, 0.5), fill: color.get(p), "data-provider": p }, svg("title", { text: `${d} · ${p}: ${fmtUsd(cost)}` })),
      );
    }
    root.appendChild(g);
    if (dates.length <= 10 || i % Math.ceil(dates.length / 10) === 0) {
      root.appendChild(svg("text", { x: x + barW / 2, y: H - pad.b + 16, "text-anchor": "middle", "font-size": 11, fill: "#5d6678", text: d.slice(5) }));
    }
  });
  container.appendChild(root);
  container.appendChild(
    h(
      "ul",
      { class: "legend", attrs: { "aria-label": "Providers" } },
      provs.map((p) => {
        const sw = h("span", { class: "swatch", attrs: { "aria-hidden": "true" } });
        sw.style.background = color.get(p);
        return h("li", {}, sw, p);
      }),
    ),
  );
}

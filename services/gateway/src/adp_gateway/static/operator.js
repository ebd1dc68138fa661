// Operator view: component health, providers, breakers, cost against budget with a daily chart, alerts.

import { api, ApiError } from "./api.js";
import { renderCostChart } from "./chart.js";
import { $, clear, fmtTime, fmtUsd, h, toast } from "./dom.js";

const firstDefined = (...values) => values.find((v) => v !== undefined && v !== null);

/** {name: obj} or [obj] -> [{name, ...obj}] */
function toList(x, nameKeys = ["name", "provider", "id"]) {
  if (!x) return [];
  if (Array.isArray(x)) return x.map((o) => (typeof o === "object" ? { ...o, name: firstDefined(...nameKeys.map((k) => o[k])) } : { name: String(o) }));
  if (typeof x === "object") return Object.entries(x).map(([name, v]) => (v && typeof v === "object" ? { name, ...v } : { name, value: v }));
  return [];
}

function badge(value) {
  const text = String(value ?? "unknown");
  const cls = text.toLowerCase().replace(/[^a-z_]/g, "_");
  return h("span", { class: `badge ${cls}`, text });
}

function pct(v) {
  if (v === undefined || v === null || v === "") return "—";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return `${(n <= 1 ? n * 100 : n).toFixed(1)}%`;
}

function ms(v) {
  if (v === undefined || v === null) return "—";
  const n = Number(v);
  return Number.isFinite(n) ? `${Math.round(n)} ms` : String(v);
}

function humanize(key) {
  return key.replace(/([a-z0-9])([A-Z])/g, "$1 $2").replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

export class OperatorView {
  constructor() {
    this.loading = false;
  }

  async refresh() {
    if (this.loading) return;
    this.loading = true;
    const err = $("#operator-error");
    err.hidden = true;
    try {
      const [dash, costs, alerts] = await Promise.allSettled([
        api("GET", "/api/monitoring/dashboard"),
        api("GET", "/api/costs"),
        api("GET", "/api/alerts"),
      ]);
      const failures = [dash, costs, alerts].filter((r) => r.status === "rejected").map((r) => r.reason);
      const forbidden = failures.find((e) => e instanceof ApiError && (e.status === 403 || e.code === "FORBIDDEN"));
      if (forbidden) {
        err.textContent = "The operator view needs an admin API key.";
        err.hidden = false;
      } else if (failures.length) {
        err.textContent = failures.map((e) => e.message).join("; ");
        err.hidden = false;
      }
      const d = dash.status === "fulfilled" ? dash.value || {} : {};
      this.renderHealth(d.health);
      this.renderMetrics(d.metrics);
      this.renderProviders(d.providers, firstDefined(d.circuitBreakers, d.circuit_breakers, d.breakers));
      const c = costs.status === "fulfilled" ? costs.value : d.costs;
      this.renderCosts(c || {});
      const a = alerts.status === "fulfilled" ? alerts.value : d.alerts;
      this.renderAlerts(a);
    } finally {
      this.loading = false;
    }
  }

  renderHealth(health) {
    const list = clear($("#health-list"));
    const overall = health && health.status;
    $("#health-overall").textContent = overall ? `Overall: ${overall}` : "";
    const comps = toList(health && (health.components || health.services || (health.status ? null : health)));
    for (const c of comps) {
      const status = firstDefined(c.status, c.value, c.healthy === undefined ? undefined : c.healthy ? "UP" : "DOWN", "unknown");
      const extra = [c.instances !== undefined ? `${c.instances} instance(s)` : "", c.error || c.message || ""].filter(Boolean).join(" · ");
      list.appendChild(h("li", { dataset: { component: c.name } }, h("span", {}, c.name, extra ? h("span", { class: "muted", text: ` ${extra}` }) : null), badge(status)));
    }
    if (!comps.length) list.appendChild(h("li", { class: "muted", text: "No health data." }));
  }

  renderMetrics(metrics) {
    const dl = clear($("#metrics-list"));
    for (const [k, v] of Object.entries(metrics || {})) {
      if (k === "errorCodes" && v && typeof v === "object") {
        const codes = Object.entries(v).map(([code, n]) => `${code} ${n}`).join(", ");
        dl.appendChild(h("dt", { text: "Error codes" }));
        dl.appendChild(h("dd", { text: codes || "none" }));
        continue;
      }
      if (v !== null && typeof v === "object") continue;
      let shown = v;
      if (/Ms$/.test(k)) shown = ms(v);
      else if (/ratePerS$/i.test(k) && typeof v === "number") shown = `${v.toFixed(2)}/s`;
      else if (/rate/i.test(k) && typeof v === "number") shown = pct(v);
      else if (typeof v === "number" && !Number.isInteger(v)) shown = v.toFixed(2);
      dl.appendChild(h("dt", { text: humanize(k) }));
      dl.appendChild(h("dd", { text: String(shown) }));
    }
  }

  renderProviders(providers, breakers) {
    const tbody = clear($("#providers-table tbody"));
    const byName = new Map();
    for (const p of toList(providers)) byName.set(p.name, { ...p });
    for (const b of toList(breakers)) {
      const state = firstDefined(b.state, b.value, b.status);
      const row = byName.get(b.name) || { name: b.name };
      row.breaker = state;
      byName.set(b.name, row);
    }
    for (const p of byName.values()) {
      const available = firstDefined(p.available, p.availability, p.up);
      const availText = typeof available === "boolean" ? (available ? "yes" : "no") : available === undefined ? "unknown" : pct(available);
      const success = firstDefined(p.successRate, p.success_rate);
      const p50 = firstDefined(p.latencyP50Ms, p.latency_p50_ms, p.latencyMs, p.latency_ms, p.latency && p.latency.p50, typeof p.latency === "number" ? p.latency : undefined);
      const p95 = firstDefined(p.latencyP95Ms, p.latency_p95_ms, p.latency && p.latency.p95);
      const breaker = firstDefined(p.breaker, p.circuitBreaker, p.breakerState, p.circuit_state, "closed");
      const breakerText = typeof breaker === "object" ? firstDefined(breaker.state, "unknown") : breaker;
      tbody.appendChild(
        h(
          "tr",
          { dataset: { provider: p.name } },
          h("th", { attrs: { scope: "row" }, text: p.name }),
          h("td", {}, typeof available === "boolean" || available === undefined ? badge(availText) : availText),
          h("td", { text: pct(success) }),
          h("td", { text: `${ms(p50)} / ${ms(p95)}` }),
          h("td", {}, badge(breakerText)),
        ),
      );
    }
    if (!byName.size) tbody.appendChild(h("tr", {}, h("td", { attrs: { colspan: 5 }, class: "muted", text: "No provider data." })));
  }

  renderCosts(c) {
    const box = clear($("#budget"));
    const b = c.budget || {};
    const current = Number(firstDefined(b.current, b.spent_usd, 0));
    const limit = Number(firstDefined(b.limit, b.limit_usd, 0));
    const shownPct = limit > 0 ? (current / limit) * 100 : Number(firstDefined(b.percentage, 0)) || 0;
    const meter = h("div", { class: "meter", attrs: { role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(shownPct), "aria-label": "Budget used today" } }, h("span"));
    meter.firstChild.style.width = `${Math.min(100, Math.max(0, shownPct))}%`;
    if (b.exceeded || shownPct >= 100) meter.classList.add("over");
    else if (shownPct >= 80) meter.classList.add("high");
    box.appendChild(h("p", { class: "budget-line" }, h("strong", { text: "Today: " }), `${fmtUsd(current)} of ${limit ? fmtUsd(limit) : "no limit"} (${shownPct.toFixed(1)}%)`, b.exceeded ? h("span", { class: "badge open", text: " budget exceeded" }) : null));
    box.appendChild(meter);
    if (c.userCost !== undefined && c.userCost !== null) box.appendChild(h("p", { class: "meta", text: `Your cost: ${fmtUsd(c.userCost)}` }));
    const byProv = toList(c.costByProvider, ["key", "provider", "name"]);
    if (byProv.length) box.appendChild(h("p", { class: "meta", text: "By provider: " + byProv.map((r) => `${r.name} ${fmtUsd(firstDefined(r.cost_usd, r.cost, r.value))}`).join(", ") }));
    renderCostChart($("#cost-chart"), c.dailyCosts || []);
  }

  renderAlerts(a) {
    const list = clear($("#alerts-list"));
    const alerts = Array.isArray(a) ? a : (a && (a.alerts || a.active)) || [];
    const active = alerts.filter((x) => String(x.state || "firing") !== "resolved");
    $("#alerts-empty").hidden = active.length > 0;
    for (const al of active) {
      const acked = Boolean(al.acknowledged || al.acknowledged_at || al.acknowledgedAt);
      const li = h(
        "li",
        { dataset: { alertId: al.id } },
        badge(al.severity || "warning"),
        h("span", { class: "a-text" }, h("strong", { text: `${al.rule || "alert"}` }), al.subject ? ` (${al.subject})` : "", " — ", al.message || "", h("span", { class: "muted", text: ` since ${fmtTime(al.started_at || al.startedAt)}` })),
      );
      if (acked) li.appendChild(h("span", { class: "acked", text: `acknowledged${al.acknowledged_by ? ` by ${al.acknowledged_by}` : ""}` }));
      else {
        const btn = h("button", { type: "button", class: "ack", text: "Acknowledge", attrs: { "aria-label": `Acknowledge alert ${al.rule || ""} ${al.subject || ""}`.trim() } });
        btn.addEventListener("click", () => this.ack(al.id, btn));
        li.appendChild(btn);
      }
      list.appendChild(li);
    }
  }

  async ack(id, btn) {
    btn.disabled = true;
    try {
      await api("POST", `/api/alerts/${encodeURIComponent(id)}/ack`, {});
      const reply = await api("GET", "/api/alerts");
      this.renderAlerts(reply);
      const again = document.querySelector(`#alerts-list li[data-alert-id="${CSS.escape(id)}"] .acked, #alerts-list li[data-alert-id="${CSS.escape(id)}"] button`);
      if (again) again.focus?.();
    } catch (err) {
      btn.disabled = false;
      toast(`Acknowledge failed: ${err.message}`);
    }
  }
}

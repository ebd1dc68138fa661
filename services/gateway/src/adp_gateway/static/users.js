// Users and keys (operator): create users and keys, revoke keys, disable or enable users, see spend.

import { api, ApiError } from "./api.js";
import { $, clear, fmtTime, fmtUsd, h, toast } from "./dom.js";

function spendOf(rows) {
  const out = new Map();
  for (const r of (rows && rows.rows) || []) out.set(r.key, { cost: r.cost_usd, requests: r.requests });
  return out;
}

export class UsersView {
  constructor() {
    this.loading = false;
    this.users = [];
    $("#user-form").addEventListener("submit", (ev) => this.createUser(ev));
    $("#key-form").addEventListener("submit", (ev) => this.createKey(ev));
    $("#users-refresh").addEventListener("click", () => this.refresh());
  }

  async refresh() {
    if (this.loading) return;
    this.loading = true;
    const err = $("#users-error");
    err.hidden = true;
    try {
      const [users, keys, byUser, byKey] = await Promise.all([
        api("GET", "/api/admin/users"),
        api("GET", "/api/admin/keys"),
        api("GET", "/api/costs?kind=by_user"),
        api("GET", "/api/costs?kind=by_key"),
      ]);
      this.users = users.users || [];
      this.renderUsers(this.users, spendOf(byUser));
      this.renderKeys(keys.keys || [], spendOf(byKey));
    } catch (e) {
      const forbidden = e instanceof ApiError && (e.status === 403 || e.code === "FORBIDDEN");
      err.textContent = forbidden ? "Users and keys need an admin API key." : e.message;
      err.hidden = false;
    } finally {
      this.loading = false;
    }
  }

  renderUsers(users, spend) {
    const tbody = clear($("#users-table tbody"));
    const select = clear($("#key-user"));
    for (const u of users) {
      const s = spend.get(u.id);
      const toggle = h("button", { type: "button", class: u.disabled ? "enable" : "disable", text: u.disabled ? "Enable" : "Disable" });
      toggle.addEventListener("click", () => this.setDisabled(u, !u.disabled, toggle));
      tbody.appendChild(
        h(
          "tr",
          { dataset: { userId: u.id } },
          h("th", { attrs: { scope: "row" }, text: u.name }),
          h("td", { text: u.role }),
          h("td", {}, h("span", { class: `badge ${u.disabled ? "open" : "closed"}`, text: u.disabled ? "disabled" : "active" })),
          h("td", { text: String(u.activeKeys ?? "—") }),
          h("td", { class: "spend", text: s ? `${fmtUsd(s.cost)} (${s.requests} calls)` : fmtUsd(0) }),
          h("td", {}, toggle),
        ),
      );
      select.appendChild(h("option", { value: u.id, text: `${u.name} (${u.id})` }));
    }
    if (!users.length) tbody.appendChild(h("tr", {}, h("td", { attrs: { colspan: 6 }, class: "muted", text: "No users." })));
  }

  renderKeys(keys, spend) {
    const tbody = clear($("#keys-table tbody"));
    const names = new Map(this.users.map((u) => [u.id, u.name]));
    for (const k of keys) {
      const s = spend.get(k.id);
      const state = k.revokedAt ? "revoked" : k.active ? "active" : "expired";
      const revoke = h("button", { type: "button", class: "revoke", text: "Revoke", disabled: Boolean(k.revokedAt) });
      revoke.addEventListener("click", () => this.revoke(k, revoke));
      tbody.appendChild(
        h(
          "tr",
          { dataset: { keyId: k.id } },
          h("th", { attrs: { scope: "row" }, text: k.name || k.prefix }),
          h("td", { text: names.get(k.userId) || k.userId }),
          h("td", {}, h("span", { class: `badge ${state === "active" ? "closed" : "open"}`, text: state })),
          h("td", { text: k.expiresAt ? fmtTime(k.expiresAt) : "never" }),
          h("td", { text: k.lastUsedAt ? fmtTime(k.lastUsedAt) : "—" }),
          h("td", { class: "spend", text: s ? `${fmtUsd(s.cost)} (${s.requests} calls)` : fmtUsd(0) }),
          h("td", { text: k.dailyBudgetUsd ? fmtUsd(k.dailyBudgetUsd) : "—" }),
          h("td", {}, revoke),
        ),
      );
    }
    if (!keys.length) tbody.appendChild(h("tr", {}, h("td", { attrs: { colspan: 8 }, class: "muted", text: "No keys." })));
  }

  async createUser(ev) {
    ev.preventDefault();
    const name = $("#user-name").value.trim();
    if (!name) return;
    try {
      await api("POST", "/api/admin/users", { name, role: $("#user-role").value });
      $("#user-name").value = "";
      await this.refresh();
    } catch (e) {
      toast(`Create user failed: ${e.message}`);
    }
  }

  async createKey(ev) {
    ev.preventDefault();
    const body = { name: $("#key-name").value.trim() };
    const days = Number($("#key-days").value);
    if (days > 0) body.expiresInDays = days;
    const budget = $("#key-budget").value.trim();
    if (budget) body.dailyBudgetUsd = budget;
    try {
      const made = await api("POST", `/api/admin/users/${encodeURIComponent($("#key-user").value)}/keys`, body);
      const box = $("#new-key");
      box.hidden = false;
      $("#new-key-value").textContent = made.key;
      $("#key-name").value = "";
      await this.refresh();
    } catch (e) {
      toast(`Create key failed: ${e.message}`);
    }
  }

  async revoke(key, btn) {
    btn.disabled = true;
    try {
      await api("DELETE", `/api/admin/keys/${encodeURIComponent(key.id)}`);
      await this.refresh();
    } catch (e) {
      btn.disabled = false;
      toast(`Revoke failed: ${e.message}`);
    }
  }

  async setDisabled(user, disabled, btn) {
    btn.disabled = true;
    try {
      await api("PATCH", `/api/admin/users/${encodeURIComponent(user.id)}`, { disabled });
      await this.refresh();
    } catch (e) {
      btn.disabled = false;
      toast(`${disabled ? "Disable" : "Enable"} failed: ${e.message}`);
    }
  }
}

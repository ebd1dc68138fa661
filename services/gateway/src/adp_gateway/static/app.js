// Web console entry point: sign-in, navigation between views, new discussion, history.

import { api, ApiError, getKey, setKey } from "./api.js";
import { DiscussionView } from "./discussion.js";
import { $, $$, clear, fmtTime, h, toast } from "./dom.js";
import { OperatorView } from "./operator.js";
import { UsersView } from "./users.js";

const VIEWS = ["signin", "new", "discussion", "history", "operator", "users"];
let current = null; // DiscussionView
const operator = new OperatorView();
const users = new UsersView();

function show(view) {
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  $("#nav").hidden = view === "signin";
  for (const b of $$(".nav-btn[data-view]")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  document.body.dataset.view = view;
}

function focusHeading(view) {
  const heading = $(`#view-${view} h2`);
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

function route() {
  if (!getKey()) {
    show("signin");
    $("#api-key").focus();
    return;
  }
  const hash = location.hash.replace(/^#/, "");
  const m = hash.match(/^discussion\/([\w.:-]+)$/);
  if (m) {
    openDiscussion(decodeURIComponent(m[1]));
  } else if (hash === "history") {
    closeDiscussion();
    show("history");
    loadHistory();
  } else if (hash === "operator") {
    closeDiscussion();
    show("operator");
    operator.refresh();
  } else if (hash === "users") {
    closeDiscussion();
    show("users");
    users.refresh();
  } else {
    closeDiscussion();
    show("new");
  }
}

function navigate(hash) {
  if (location.hash === `#${hash}`) route();
  else location.hash = hash;
}

function closeDiscussion() {
  if (current) current.destroy();
  current = null;
}

function openDiscussion(id, topic) {
  if (current && current.id === id) {
    show("discussion");
    return;
  }
  closeDiscussion();
  show("discussion");
  current = new DiscussionView(id);
  current.start({ topic });
  focusHeading("discussion");
}

// ---- sign in ---------------------------------------------------------------------------------------------

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  const err = $("#signin-error");
  err.hidden = true;
  if (!key) {
    err.textContent = "Enter an API key.";
    err.hidden = false;
    return;
  }
  setKey(key);
  try {
    await api("GET", "/api/discussions");
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === "UNAUTHORIZED")) {
      setKey("");
      err.textContent = "That API key was not accepted.";
      err.hidden = false;
      $("#api-key").focus();
      return;
    }
    // Other errors (e.g. a service briefly down) do not mean the key is wrong.
  }
  $("#api-key").value = "";
  navigate("new");
  focusHeading("new");
});

$("#signout").addEventListener("click", () => {
  closeDiscussion();
  setKey("");
  location.hash = "";
  route();
});

for (const b of $$(".nav-btn[data-view]")) {
  b.addEventListener("click", () => {
    navigate(b.dataset.view === "new" ? "new" : b.dataset.view);
    focusHeading(b.dataset.view);
  });
}

// ---- new discussion --------------------------------------------------------------------------------------

$("#new-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = $("#new-error");
  err.hidden = true;
  const topic = $("#topic").value.trim();
  if (!topic) {
    err.textContent = "Enter a topic.";
    err.hidden = false;
    $("#topic").focus();
    return;
  }
  const btn = $("#start-btn");
  btn.disabled = true;
  try {
    const body = { topic };
    const files = [];
    for (const file of $("#files").files) {
      const form = new FormData();
      form.append("file", file, file.name);
      btn.textContent = `Uploading ${file.name}…`;
      files.push(await api("POST", "/api/files", form, { timeoutMs: 120000 }));
    }
    if (files.length) body.files = files;
    const personas = $$("input[name=persona]:checked").map((i) => i.value);
    if (!personas.length) throw new ApiError(400, "VALIDATION_ERROR", "Choose at least one persona.");
    if (personas.length !== 3) body.personas = personas.map((name) => ({ name }));
    const rounds = $("#max-rounds").value.trim();
    if (rounds) body.max_rounds = Number(rounds);
    btn.textContent = "Starting…";
    const d = await api("POST", "/api/discussions", body);
    $("#topic").value = "";
    $("#files").value = "";
    location.hash = `discussion/${encodeURIComponent(d.id)}`;
    openDiscussion(d.id, d.topic || topic);
  } catch (e) {
    err.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
    err.hidden = false;
  } finally {
    btn.disabled = false;
    btn.textContent = "Start discussion";
  }
});

// ---- history ---------------------------------------------------------------------------------------------

async function loadHistory() {
  const list = clear($("#history-list"));
  try {
    const reply = await api("GET", "/api/discussions");
    const items = Array.isArray(reply) ? reply : reply.discussions || reply.items || [];
    $("#history-empty").hidden = items.length > 0;
    items.sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")));
    for (const d of items) {
      const open = h("button", { type: "button", text: "Open", attrs: { "aria-label": `Open discussion: ${String(d.topic).slice(0, 80)}` } });
      open.addEventListener("click", () => navigate(`discussion/${encodeURIComponent(d.id)}`));
      list.appendChild(
        h(
          "li",
          { dataset: { discussionId: d.id } },
          h("div", {}, h("div", { class: "h-topic", text: d.topic }), h("div", { class: "meta", text: [d.status, d.currentRound !== undefined ? `round ${d.currentRound}` : "", fmtTime(d.createdAt)].filter(Boolean).join(" · ") })),
          open,
        ),
      );
    }
  } catch (e) {
    toast(`Could not load history: ${e.message}`);
  }
}

$("#history-refresh").addEventListener("click", loadHistory);
$("#operator-refresh").addEventListener("click", () => operator.refresh());

window.addEventListener("hashchange", route);
route();

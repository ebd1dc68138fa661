// The live discussion view: renders a discussion from its snapshot and its event stream.
//
// Exactly-once rendering: durable events carry a numeric seq (SSE id); any event with a seq at or below the
// last applied one is a replay and is ignored. Completed messages are keyed by message id and by
// (round, turn), so a message seen both in the snapshot and in the stream appears once; a completed
// message replaces whatever chunks were shown, so chunks lost in a network drop leave no gap.

import { api, ApiError, download } from "./api.js";
import { $, $$, clear, h, personaClass, toast } from "./dom.js";
import { EventStream } from "./sse.js";

const ENDED = new Set(["completed", "complete", "resolved", "stopped", "failed", "cancelled", "canceled", "ended"]);

const firstDefined = (...values) => values.find((v) => v !== undefined && v !== null);

function messagePersona(m) {
  return firstDefined(m.persona, m.personaName, m.speaker, m.author, m.role, "Unknown");
}
function messageRound(m) {
  return Number(firstDefined(m.round, m.roundNumber, m.round_number, 0));
}
function messageTurn(m) {
  const t = firstDefined(m.turn, m.turnNumber, m.position);
  return t === undefined ? null : Number(t);
}
function textOf(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  return firstDefined(value.content, value.text, value.summary, value.finalAnswer, JSON.stringify(value));
}

export class DiscussionView {
  constructor(id, { onEnded } = {}) {
    this.id = id;
    this.onEnded = onEnded || (() => {});
    this.lastSeq = 0;
    this.bubbles = new Map(); // key -> bubble
    this.byMsgId = new Map(); // message id -> bubble
    this.roundEls = new Map();
    this.banners = new Set();
    this.questionSetsShown = new Set();
    this.currentQuestionSet = null;
    this.running = false;
    this.ended = false;
    this.topic = "";
    this.status = "";
    this.round = 0;
    this.maxRounds = null;
    this.stream = null;
    this.snapshotLoaded = false;
    this.abort = new AbortController();
    this.resetDom();
    this.bindControls();
  }

  resetDom() {
    clear($("#rounds"));
    clear($("#banners"));
    clear($("#questions-fields"));
    $("#questions").hidden = true;
    $("#topic-title").textContent = "";
    $("#user-input").value = "";
    this.setConn("connecting");
    this.renderMeta();
  }

  bindControls() {
    const signal = this.abort.signal;
    for (const btn of $$("#actions [data-action]")) {
      btn.addEventListener("click", () => this.action(btn.dataset.action), { signal });
    }
    $("#input-form").addEventListener(
      "submit",
      (ev) => {
        ev.preventDefault();
        const text = $("#user-input").value.trim();
        if (!text) return;
        this.action("input", { input: text }).then((ok) => {
          if (ok) $("#user-input").value = "";
        });
      },
      { signal },
    );
    $("#questions-form").addEventListener(
      "submit",
      (ev) => {
        ev.preventDefault();
        this.submitAnswers();
      },
      { signal },
    );
    $("#export-json").addEventListener("click", () => this.exportAs("json"), { signal });
    $("#export-md").addEventListener("click", () => this.exportAs("markdown"), { signal });
  }

  /** Start: open the event stream (replaying from the start), then merge the snapshot. */
  start({ topic } = {}) {
    if (topic) this.setTopic(topic);
    this.stream = new EventStream(`/api/discussions/${encodeURIComponent(this.id)}/events`, {
      lastEventId: 0,
      onEvent: (ev) => this.onEvent(ev),
      onStatus: (status, detail) => {
        this.setConn(status, detail);
        if (status === "live" && !this.snapshotLoaded) {
          this.snapshotLoaded = true;
          this.loadSnapshot();
        }
      },
    });
  }

  destroy() {
    this.abort.abort();
    if (this.stream) this.stream.close();
    this.stream = null;
  }

  async loadSnapshot() {
    try {
      const d = await api("GET", `/api/discussions/${encodeURIComponent(this.id)}`);
      this.applySnapshot(d);
    } catch (err) {
      toast(`Could not load discussion: ${err.message}`);
    }
  }

  applySnapshot(d) {
    if (!d) return;
    if (d.topic) this.setTopic(d.topic);
    if (d.status) this.status = d.status;
    if (d.currentRound !== undefined) this.round = Math.max(this.round, Number(d.currentRound) || 0);
    if (d.maxRounds) this.maxRounds = d.maxRounds;
    const perRoundIndex = new Map();
    for (const m of d.messages || []) {
      const r = messageRound(m);
      const idx = (perRoundIndex.get(r) || 0) + 1;
      perRoundIndex.set(r, idx);
      this.completeMessage(m, { fallbackTurn: null });
    }
    for (const r of d.rounds || []) {
      const n = Number(firstDefined(r.number, r.roundNumber, r.round, 0));
      const st = String(r.status || "").toLowerCase();
      if (n && (st === "complete" || st === "completed" || r.completedAt || r.completed_at)) this.markRoundComplete(n);
    }
    for (const s of d.summaries || []) this.showSummary(s);
    if (d.resolution) this.showResolution(d.resolution);
    const sets = d.questions || [];
    const last = sets.length ? sets[sets.length - 1] : null;
    if (last && Array.isArray(last.questions) && !last.answers && !last.answered && !last.answeredAt) {
      this.showQuestions(last);
    }
    if (ENDED.has(String(this.status).toLowerCase())) this.setEnded();
    this.renderMeta();
  }

  // ---- events -------------------------------------------------------------------------------------------

  onEvent({ event, data, id }) {
    if (id !== null && id !== undefined && /^\d+$/.test(String(id))) {
      const seq = Number(id);
      if (seq <= this.lastSeq) return; // replay of something already applied
      this.lastSeq = seq;
    }
    const d = data && typeof data === "object" ? data : {};
    if (d.discussionId && d.discussionId !== this.id) return;
    switch (event) {
      case "discussion-started":
        if (d.topic) this.setTopic(d.topic);
        this.status = d.status || "active";
        break;
      case "message-start":
        this.startMessage(d);
        break;
      case "message-chunk":
        this.chunk(d);
        break;
      case "message-complete":
        this.completeMessage(d.message || d);
        break;
      case "round-complete":
        this.markRoundComplete(Number(firstDefined(d.round && (d.round.number ?? d.round.roundNumber), d.roundNumber, d.round, this.round)));
        this.running = false;
        if (!this.ended) this.status = "waiting for you";
        break;
      case "questions-generated":
        this.showQuestions(d.questionSet || d, d.roundNumber);
        break;
      case "summary-created":
        this.showSummary(d.summary || d);
        break;
      case "discussion-resolved":
        this.showResolution(d);
        this.setEnded("resolved");
        break;
      case "discussion-stopped":
      case "discussion-completed":
        this.setEnded(event.replace("discussion-", ""));
        break;
      case "discussion-failed":
        this.showBanner("error", `failed:${id || ""}`, "The discussion failed", d.message || "A step failed too often");
        this.interruptOpenBubbles();
        this.setEnded("failed");
        break;
      case "error":
        this.showBanner("error", `error:${id || d.code || ""}:${d.message || ""}`, `Error${d.code ? ` (${d.code})` : ""}`, d.message || "Something went wrong");
        this.running = false;
        this.interruptOpenBubbles();
        break;
      default:
        break;
    }
    this.renderMeta();
  }

  bubbleFor(round, turn, persona) {
    const key = turn === null ? null : `${round}:${turn}`;
    let b = key ? this.bubbles.get(key) : undefined;
    if (!b) {
      // A bubble from the snapshot had no turn number: adopt it when persona and round match.
      b = [...this.bubbles.values()].find((x) => x.key === null && x.round === round && x.persona === persona && !x.adopted);
      if (b && key) {
        b.adopted = true;
        b.key = key;
        this.bubbles.set(key, b);
      }
    }
    if (!b) b = this.createBubble(round, turn, persona);
    return b;
  }

  createBubble(round, turn, persona) {
    const roundEl = this.roundSection(round);
    const content = h("div", { class: "content" });
    const el = h(
      "article",
      { class: `msg ${personaClass(persona)}`, attrs: { "aria-label": `${persona}, round ${round}` }, dataset: { persona, round, turn: turn ?? "" } },
      h("header", {}, h("span", { class: "dot", attrs: { "aria-hidden": "true" } }), h("span", { class: "persona-name", text: persona })),
      content,
    );
    // Keep turn order inside a round even when messages arrive out of order (snapshot vs. stream).
    const siblings = $$(".msg", roundEl);
    const after = turn === null ? null : siblings.find((s) => s.dataset.turn !== "" && Number(s.dataset.turn) > turn);
    roundEl.insertBefore(el, after || null);
    const key = turn === null ? null : `${round}:${turn}`;
    const bubble = { key, round, turn, persona, el, content, text: "", complete: false, msgId: null };
    const mapKey = key ?? `nokey:${this.bubbles.size}:${Math.random()}`;
    this.bubbles.set(mapKey, bubble);
    return bubble;
  }

  roundSection(round) {
    let el = this.roundEls.get(round);
    if (el) return el;
    el = h("section", { class: "round", attrs: { "aria-label": `Round ${round}` }, dataset: { round } }, h("h3", { text: round ? `Round ${round}` : "Opening" }));
    const container = $("#rounds");
    const next = [...this.roundEls.entries()].filter(([n]) => n > round).sort((a, b) => a[0] - b[0])[0];
    container.insertBefore(el, next ? next[1] : null);
    this.roundEls.set(round, el);
    return el;
  }

  startMessage(d) {
    const round = Number(firstDefined(d.round, d.roundNumber, this.round));
    const turn = d.turn === undefined ? null : Number(d.turn);
    const persona = d.persona || "Unknown";
    if (round > this.round) this.round = round;
    this.running = true;
    if (!this.ended) this.status = "active";
    const b = this.bubbleFor(round, turn, persona);
    if (b.complete && !d.restart) return;
    if (d.restart) {
      b.complete = false;
      b.text = "";
      b.content.textContent = "";
    }
    b.el.classList.add("thinking");
  }

  chunk(d) {
    const round = Number(firstDefined(d.round, d.roundNumber, this.round));
    const turn = d.turn === undefined ? null : Number(d.turn);
    const b = this.bubbleFor(round, turn, d.persona || "Unknown");
    if (b.complete) return;
    b.el.classList.remove("thinking");
    b.el.classList.add("streaming");
    b.text += String(d.chunk ?? d.delta ?? "");
    b.content.textContent = b.text;
  }

  completeMessage(m) {
    if (!m) return;
    const id = firstDefined(m.id, m.messageId);
    if (id && this.byMsgId.has(id)) return;
    const round = messageRound(m);
    const turn = messageTurn(m);
    const persona = messagePersona(m);
    let b = null;
    if (turn !== null) b = this.bubbleFor(round, turn, persona);
    else {
      b = [...this.bubbles.values()].find((x) => x.round === round && x.persona === persona && !x.complete) || this.createBubble(round, null, persona);
    }
    b.complete = true;
    b.msgId = id || null;
    if (id) {
      this.byMsgId.set(id, b);
      b.el.dataset.messageId = id;
    }
    b.text = textOf(firstDefined(m.content, m.text, ""));
    b.content.textContent = b.text;
    b.el.classList.remove("thinking", "streaming");
    if (round > this.round) this.round = round;
  }

  /** After an error no open bubble keeps "thinking"; a later restart of the turn reuses the bubble. */
  interruptOpenBubbles() {
    for (const b of this.bubbles.values()) {
      if (b.complete) continue;
      b.el.classList.remove("thinking", "streaming");
      if (!b.text) b.content.textContent = "(no answer: interrupted)";
    }
  }

  markRoundComplete(round) {
    if (!round && round !== 0) return;
    const el = this.roundEls.get(round) || this.roundSection(round);
    el.classList.add("complete");
    for (const b of this.bubbles.values()) if (b.round === round) b.el.classList.remove("thinking");
  }

  showSummary(s) {
    const key = `summary:${firstDefined(s.id, s.roundNumber, "")}:${textOf(s).slice(0, 80)}`;
    const round = firstDefined(s.roundNumber, s.round);
    this.showBanner("summary", key, round ? `Summary after round ${round}` : "Summary", textOf(s));
  }

  showResolution(d) {
    const resolution = d.resolution ?? d;
    const finalAnswer = firstDefined(d.finalAnswer, resolution && resolution.finalAnswer, resolution && resolution.final_answer);
    const reason = typeof resolution === "string" ? resolution : firstDefined(resolution && resolution.reason, resolution && resolution.summary, resolution && resolution.type, "");
    const body = [finalAnswer ? String(finalAnswer) : "", reason && reason !== finalAnswer ? `(${reason})` : ""].filter(Boolean).join("\n\n");
    this.showBanner("resolution", "resolution", "Resolved — final answer", body || "The discussion reached a resolution.");
  }

  showBanner(kind, key, title, text) {
    if (this.banners.has(key)) return;
    this.banners.add(key);
    $("#banners").appendChild(h("div", { class: `banner ${kind}`, attrs: { role: kind === "error" ? "alert" : "status" } }, h("h3", { text: title }), h("div", { class: "banner-text", text })));
  }

  showQuestions(set, roundNumber) {
    if (!set || !Array.isArray(set.questions) || !set.questions.length) return;
    const setId = firstDefined(set.id, `${set.roundNumber}`);
    if (this.questionSetsShown.has(setId)) return;
    this.questionSetsShown.add(setId);
    this.currentQuestionSet = { ...set, roundNumber: Number(firstDefined(set.roundNumber, roundNumber, this.round)) };
    const fields = clear($("#questions-fields"));
    set.questions.forEach((q, qi) => {
      const fs = h("fieldset", { dataset: { questionId: q.id } }, h("legend", { text: `${qi + 1}. ${q.text}` }));
      (q.options || []).forEach((opt, oi) => {
        const inputId = `q-${qi}-o-${oi}`;
        fs.appendChild(
          h("label", { class: "check", htmlFor: inputId }, h("input", { type: "checkbox", id: inputId, name: `q-${qi}`, value: opt.id }), document.createTextNode(" " + opt.text)),
        );
      });
      fields.appendChild(fs);
    });
    $("#questions-title").textContent = `Questions for you (round ${this.currentQuestionSet.roundNumber})`;
    $("#questions").hidden = false;
  }

  async submitAnswers() {
    const set = this.currentQuestionSet;
    if (!set) return;
    const answers = {};
    for (const fs of $$("#questions-fields fieldset")) {
      answers[fs.dataset.questionId] = $$("input:checked", fs).map((i) => i.value);
    }
    const ok = await this.action("answers", { roundNumber: set.roundNumber, answers });
    if (ok) {
      $("#questions").hidden = true;
      this.currentQuestionSet = null;
    }
  }

  async action(name, body = {}) {
    const buttons = $$("#actions button, #questions-form button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await api("POST", `/api/discussions/${encodeURIComponent(this.id)}/${name}`, body);
      if (name === "proceed" || name === "answers" || name === "input") {
        this.running = true;
        $("#questions").hidden = true;
      }
      if (name === "stop") this.setEnded("stopped");
      return true;
    } catch (err) {
      toast(err instanceof ApiError ? `${err.code}: ${err.message}` : String(err));
      return false;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      this.renderMeta();
    }
  }

  async exportAs(format) {
    const ext = format === "json" ? "json" : "md";
    try {
      await download(`/api/discussions/${encodeURIComponent(this.id)}/export?format=${format}`, `discussion-${this.id}.${ext}`);
    } catch (err) {
      toast(`Export failed: ${err.message}`);
    }
  }

  setTopic(topic) {
    this.topic = topic;
    $("#topic-title").textContent = topic;
  }

  setEnded(status) {
    if (status) this.status = status;
    this.ended = true;
    this.running = false;
    this.onEnded(this);
  }

  setConn(status, detail) {
    const el = $("#conn-status");
    if (!el) return;
    const label = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected", ended: "Finished" }[status] || status;
    el.textContent = label;
    el.className = `conn ${status}`;
    el.title = detail || "";
    el.dataset.state = status;
  }

  renderMeta() {
    const statusText = this.ended ? this.status || "ended" : this.running ? "AIs are talking…" : this.status ? `${this.status}` : "";
    $("#disc-status").textContent = statusText;
    $("#disc-round").textContent = this.maxRounds ? `round ${this.round} of ${this.maxRounds}` : `round ${this.round}`;
    const actionButtons = $$("#actions [data-action]");
    for (const b of actionButtons) b.disabled = this.ended || (this.running && b.dataset.action !== "stop");
    $("#actions").hidden = this.ended;
    if (this.ended) $("#questions").hidden = true;
  }
}

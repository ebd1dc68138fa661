// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the stream is read
// with a streaming reader and parsed here. Reconnects by itself with Last-Event-ID after a drop.

import { authHeaders } from "./api.js";

/** The events that end a discussion (adp_common.schemas.dialogue.TERMINAL_EVENTS): after one, the server
 * closes the stream and nothing more will come, so the client does not reconnect. */
export const TERMINAL_EVENTS = new Set(["discussion-completed", "discussion-stopped", "discussion-resolved", "discussion-failed"]);

/** Incremental parser for the text/event-stream format (WHATWG HTML "server-sent events"). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.data = [];
    this.event = "";
    this.id = null;
  }

  feed(text) {
    this.buffer += text;
    let idx;
    // Lines end with \n, \r\n or \r.
    while ((idx = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const sepLen = this.buffer[idx] === "\r" && this.buffer[idx + 1] === "\n" ? 2 : 1;
      if (this.buffer[idx] === "\r" && idx + 1 === this.buffer.length) break; // maybe a split \r\n
      const line = this.buffer.slice(0, idx);
      this.buffer = this.buffer.slice(idx + sepLen);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.data.length || this.event) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // comment / keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

/**
 * A self-reconnecting event stream.
 *   onEvent({event, data (parsed JSON or string), id}) for every event,
 *   onStatus("connecting" | "live" | "reconnecting" | "closed" | "ended", detail) — "ended" after a
 *   terminal event: the discussion is over and the stream is closed for good.
 * `lastEventId` is advanced by numeric ids only and sent as the Last-Event-ID header on every reconnect.
 */
export class EventStream {
  constructor(url, { onEvent, onStatus, lastEventId = null, idleTimeoutMs = 45000 } = {}) {
    this.url = url;
    this.onEvent = onEvent || (() => {});
    this.onStatus = onStatus || (() => {});
    this.lastEventId = lastEventId;
    this.idleTimeoutMs = idleTimeoutMs;
    this.closed = false;
    this.ctrl = null;
    this.attempt = 0;
    this.wakeup = null;
    this.onOnline = () => this.kick();
    window.addEventListener("online", this.onOnline);
    this.loop();
  }

  /** Reconnect now instead of waiting for the back-off timer. */
  kick() {
    if (this.wakeup) this.wakeup();
  }

  close(status = "closed") {
    if (this.closed) return;
    this.closed = true;
    window.removeEventListener("online", this.onOnline);
    if (this.ctrl) this.ctrl.abort();
    this.kick();
    this.onStatus(status);
  }

  async loop() {
    while (!this.closed) {
      this.onStatus(this.attempt ? "reconnecting" : "connecting");
      let fatal = null;
      try {
        fatal = await this.once();
      } catch (err) {
        if (this.closed) break;
        this.onStatus("reconnecting", err && err.message);
      }
      if (this.closed) break;
      if (fatal) {
        this.onStatus("closed", fatal);
        this.closed = true;
        break;
      }
      this.attempt += 1;
      const delay = Math.min(5000, 300 * 2 ** Math.min(this.attempt - 1, 5));
      await new Promise((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wakeup = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakeup = null;
    }
  }

  /** One connection. Returns a message when the server refuses for good (4xx), else throws/returns null. */
  async once() {
    this.ctrl = new AbortController();
    const headers = authHeaders({ Accept: "text/event-stream", "Cache-Control": "no-cache" });
    if (this.lastEventId !== null && this.lastEventId !== undefined) headers["Last-Event-ID"] = String(this.lastEventId);
    let idleTimer = null;
    const armIdle = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => this.ctrl.abort(), this.idleTimeoutMs);
    };
    try {
      armIdle();
      const resp = await fetch(this.url, { headers, signal: this.ctrl.signal, cache: "no-store" });
      if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
        let msg = `HTTP ${resp.status}`;
        try {
          const body = await resp.json();
          if (body && body.error) msg = `${body.error.code}: ${body.error.message}`;
        } catch {
          /* ignore */
        }
        return msg;
      }
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      this.attempt = 0;
      this.onStatus("live");
      const parser = new SseParser((ev) => this.dispatch(ev));
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        armIdle();
        parser.feed(value);
      }
      return null;
    } finally {
      clearTimeout(idleTimer);
    }
  }

  dispatch(ev) {
    if (ev.id !== null && ev.id !== "" && /^\d+$/.test(ev.id)) {
      const n = Number(ev.id);
      if (this.lastEventId === null || n > Number(this.lastEventId)) this.lastEventId = n;
    }
    let data = ev.data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      /* keep the string */
    }
    this.onEvent({ event: ev.event, data, id: ev.id });
    if (TERMINAL_EVENTS.has(ev.event)) this.close("ended");
  }
}

// Tiny DOM helpers. All text goes through textContent: model and user text is never parsed as HTML.

/**
 * Create an element. `props` may hold: class, text, attrs (object), dataset (object), on (object of listeners),
 * and any DOM property (type, value, checked, disabled, htmlFor, id, name ...). `children` are nodes or strings.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "attrs") for (const [a, v] of Object.entries(value)) el.setAttribute(a, String(v));
    else if (key === "dataset") for (const [a, v] of Object.entries(value)) el.dataset[a] = String(v);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else el[key] = value;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an SVG element with attributes; `text` sets textContent. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "text") el.textContent = String(value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

let toastTimer = null;
/** Show a transient error/notice message (role=alert). */
export function toast(message, ms = 6000) {
  const el = $("#toast");
  el.textContent = String(message);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, ms);
}

/** CSS class for a persona name: analyzer / solver / moderator / user / other. */
export function personaClass(name) {
  const n = String(name || "").toLowerCase();
  if (["analyzer", "solver", "moderator", "user"].includes(n)) return `persona-${n}`;
  return "persona-other";
}

export function fmtUsd(value) {
  const n = Number(value ?? 0);
  if (!Number.isFinite(n)) return String(value);
  return "$" + (Math.abs(n) < 1 && n !== 0 ? n.toFixed(4) : n.toFixed(2));
}

export function fmtTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

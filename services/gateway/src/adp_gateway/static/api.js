// HTTP client for the gateway's client contract. The API key lives in sessionStorage only.

const KEY_STORAGE = "adp.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "HTTP_" + status;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorFrom(resp) {
  let code = null;
  let message = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    /* not JSON */
  }
  return new ApiError(resp.status, code, message || `${resp.status} ${resp.statusText}`);
}

/** JSON request; rejects with ApiError carrying the contract's error code. */
export async function api(method, path, body = undefined, { timeoutMs = 30000 } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const init = { method, headers: authHeaders({ Accept: "application/json" }), signal: ctrl.signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const resp = await fetch(path, init);
    if (!resp.ok) throw await errorFrom(resp);
    if (resp.status === 204) return null;
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  } catch (err) {
    if (err.name === "AbortError") throw new ApiError(0, "TIMEOUT", `${method} ${path} timed out`);
    if (err instanceof ApiError) throw err;
    throw new ApiError(0, "NETWORK_ERROR", `network error: ${err.message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Fetch a path and hand it to the browser as a file download. */
export async function download(path, filename) {
  const resp = await fetch(path, { headers: authHeaders() });
  if (!resp.ok) throw await errorFrom(resp);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// What both pages share: building DOM nodes (text only, never HTML), calling the API,
// keeping a secret in localStorage, and formatting times.

/**
 * A DOM element. `props`: `class`, `text` (set as textContent), `on` ({event: handler}),
 * `dataset`, booleans (`hidden`, `disabled`, ...) as properties, anything else as an
 * attribute. Children are nodes or strings (strings become text nodes); null is skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `node` (an element or its id). */
export function fill(node, ...children) {
  const target = typeof node === "string" ? document.getElementById(node) : node;
  target.replaceChildren();
  append(target, children);
  return target;
}

export function byId(id) {
  return document.getElementById(id);
}

/** Show a message in an element made for it (role=alert), or hide it when `text` is empty. */
export function say(node, text, kind = "error") {
  const target = typeof node === "string" ? byId(node) : node;
  target.textContent = text || "";
  target.hidden = !text;
  target.dataset.kind = kind;
}

/** Only http(s) URLs are ever put in an href or src. */
export function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

let clockOffset = 0;

/** The server's time now, from the Date header of its last answer (to a second or so):
 * elapsed times then don't depend on this machine's clock agreeing with the server's. */
export function serverNow() {
  return Date.now() + clockOffset;
}

/** An error answer of the API: `status` is the HTTP status, `message` the envelope's. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Call the API; answers the envelope's `data`, or throws an ApiError with the envelope's
 * `message` (status 0 when the server could not be reached).
 */
export async function api(path, { token, method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "the server could not be reached");
  }
  const date = Date.parse(answer.headers.get("date") || "");
  if (!Number.isNaN(date)) clockOffset = date - Date.now();
  let envelope = null;
  try {
    envelope = await answer.json();
  } catch {
    // Not JSON: a proxy's error page, say.
  }
  if (!answer.ok || envelope === null || typeof envelope !== "object") {
    const message = envelope && typeof envelope.message === "string" ? envelope.message : `HTTP ${answer.status}`;
    throw new ApiError(answer.status, message);
  }
  return envelope.data;
}

/** A secret kept in localStorage under `name`. */
export function secret(name) {
  return {
    get: () => {
      try {
        return localStorage.getItem(name) || "";
      } catch {
        return "";
      }
    },
    set: (value) => localStorage.setItem(name, value),
    forget: () => localStorage.removeItem(name),
  };
}

/** How a key shows once saved: its first characters only. */
export function masked(value) {
  return value.length > 12 ? `${value.slice(0, 10)}…` : "…";
}

export function parseTime(iso) {
  if (!iso) return null;
  const when = Date.parse(iso);
  return Number.isNaN(when) ? null : when;
}

/** An ISO timestamp as local date and time, e.g. "2026-12-02 18:42:17". */
export function formatTime(iso) {
  const when = parseTime(iso);
  if (when === null) return "—";
  const date = new Date(when);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** Short: "18:42" today, "Dec 2 18:42" this year, else "2025-06-14". */
export function formatShort(iso) {
  const when = parseTime(iso);
  if (when === null) return "—";
  const date = new Date(when);
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  if (date.toDateString() === now.toDateString()) return clock;
  if (date.getFullYear() === now.getFullYear()) {
    return `${date.toLocaleString("en", { month: "short" })} ${date.getDate()} ${clock}`;
  }
  return formatTime(iso).slice(0, 10);
}

/** Seconds as "4 s", "3 min 5 s", "2 h 10 min". */
export function formatSeconds(seconds) {
  const total = Math.max(0, Math.round(seconds));
  if (total < 60) return `${total} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min ${total % 60} s`;
  if (total < 86400) return `${Math.floor(total / 3600)} h ${Math.floor((total % 3600) / 60)} min`;
  return `${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
}

/** "5 min ago" for an ISO timestamp (one unit only). */
export function ago(iso) {
  const when = parseTime(iso);
  if (when === null) return "—";
  const seconds = Math.max(0, Math.round((serverNow() - when) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A long id shortened for a table cell; the whole id is its title. */
export function shortId(id, keep = 12) {
  const text = String(id);
  return text.length > keep + 1 ? `${text.slice(0, keep)}…` : text;
}

/** A <time> element: local time shown, ISO value kept. */
export function timeEl(iso) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  return el("time", { datetime: iso, title: iso, text: formatTime(iso) });
}

export function plural(count, one, many = `${one}s`) {
  return `${count.toLocaleString("en")} ${count === 1 ? one : many}`;
}

/** The short name of a model: "text-to-image" for "grok-imagine/text-to-image". */
export function shortModel(name) {
  return String(name || "").replace(/^grok-imagine\//, "");
}

/** A status badge (IN_PROGRESS, SUCCESS, FAILED; or a delivery's pending, delivered...). */
export function badge(status) {
  const words = {
    IN_PROGRESS: "in progress",
    SUCCESS: "success",
    FAILED: "failed",
  };
  return el("span", {
    class: "badge",
    dataset: { status: String(status).toLowerCase() },
    text: words[status] || String(status),
  });
}

/** Pretty JSON, for a <pre> (as text). */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A <dl> from [term, value] pairs; values are nodes or strings; null values are left out. */
export function definitions(pairs, className = "facts") {
  return el(
    "dl",
    { class: className },
    pairs
      .filter(([, value]) => value !== null && value !== undefined)
      .map(([term, value]) => el("div", {}, el("dt", { text: term }), el("dd", {}, value))),
  );
}

/**
 * A table whose cells carry their column's name (data-label), which the narrow layout
 * shows beside each value when rows become cards. `columns`: [{label, cell(row) -> node|string,
 * class?}]; `rowProps(row)` gives each <tr> its props.
 */
export function table(columns, rows, { caption, rowProps, empty = "Nothing here yet." } = {}) {
  if (rows.length === 0) return el("p", { class: "empty", text: empty });
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "cards" },
      caption ? el("caption", { class: "visually-hidden", text: caption }) : null,
      el("thead", {}, el("tr", {}, columns.map((column) => el("th", { scope: "col", text: column.label })))),
      el(
        "tbody",
        {},
        rows.map((row) =>
          el(
            "tr",
            rowProps ? rowProps(row) : {},
            columns.map((column) => el("td", { "data-label": column.label, class: column.class || null }, column.cell(row))),
          ),
        ),
      ),
    ),
  );
}

/** The key or token form of a page: save, show masked, forget. */
export function secretForm({ store, form, input, saved, shown, forget, onChange, mask = masked }) {
  const refresh = () => {
    const value = store.get();
    form.hidden = Boolean(value);
    saved.hidden = !value;
    shown.textContent = value ? mask(value) : "";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    store.set(value);
    input.value = "";
    refresh();
    onChange(value);
  });
  forget.addEventListener("click", () => {
    store.forget();
    refresh();
    input.focus();
    onChange("");
  });
  refresh();
  return refresh;
}

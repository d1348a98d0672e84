// The operator console: the admin API (behind IMAGINE_ADMIN_TOKEN), and nothing else.
// Everything shown is set as text or through DOM properties, never as HTML.

import {
  ApiError,
  api,
  ago,
  badge,
  byId,
  definitions,
  el,
  fill,
  formatSeconds,
  json,
  plural,
  safeUrl,
  say,
  secret,
  secretForm,
  serverNow,
  shortId,
  shortModel,
  table,
  timeEl,
} from "./common.js";

const PAGE = 25;
const QUEUE_REFRESH_MS = 10_000;
const DELIVERY_WATCH_MS = 60_000;
const TABS = ["overview", "accounts", "keys", "tasks", "webhooks"];

const token = secret("imagine.adminToken");
const state = {
  tab: "overview",
  accounts: { items: [], cursor: null },
  account: null, // the account shown in detail
  ledger: { items: [], cursor: null },
  tasks: { items: [], cursor: null, query: {} },
  task: null,
  deliveries: { items: [], cursor: null, query: {} },
  queueTimer: null,
  providersLoaded: false,
};

function admin(path, options = {}) {
  return api(path, { token: token.get(), ...options });
}

/** What an error says, for a message element; a 401 also sends the user to the token form. */
function problem(error) {
  if (error instanceof ApiError && error.status === 401) {
    showTokenForm(`The server refused this token: ${error.message}`);
  }
  return error.message;
}

// --- is the admin API on, and is the token right? -------------------------------------

async function probe() {
  byId("probe").hidden = false;
  try {
    await admin("/admin/keys");
  } catch (error) {
    byId("probe").hidden = true;
    if (error instanceof ApiError && error.status === 404) {
      byId("off").hidden = false;
      byId("token-panel").hidden = true;
      byId("console").hidden = true;
      byId("off-message").textContent = error.message;
      return;
    }
    if (error instanceof ApiError && error.status === 401) {
      showTokenForm(token.get() ? `The server refused this token: ${error.message}` : "");
      return;
    }
    showTokenForm(`Could not ask the server: ${error.message}`);
    return;
  }
  byId("probe").hidden = true;
  byId("off").hidden = true;
  byId("token-panel").hidden = false;
  say("token-error", "");
  byId("console").hidden = false;
  selectTab(tabFromHash(), { focus: false });
}

function showTokenForm(message) {
  byId("token-panel").hidden = false;
  byId("console").hidden = true;
  stopQueueTimer();
  say("token-error", message);
}

// --- tabs ------------------------------------------------------------------------------

function tabFromHash() {
  const wanted = location.hash.replace(/^#/, "");
  return TABS.includes(wanted) ? wanted : "overview";
}

function selectTab(name, { focus = true } = {}) {
  state.tab = name;
  for (const tab of TABS) {
    const button = byId(`tab-${tab}`);
    const selected = tab === name;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    byId(`panel-${tab}`).hidden = !selected;
  }
  if (focus) byId(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  stopQueueTimer();
  if (name === "overview") {
    loadQueue();
    if (!state.providersLoaded) loadProviders();
    state.queueTimer = setInterval(() => {
      if (document.visibilityState === "visible") loadQueue();
    }, QUEUE_REFRESH_MS);
  } else if (name === "accounts") loadAccounts(true);
  else if (name === "keys") loadKeys();
  else if (name === "tasks") {
    ensureFilterChoices();
    loadTasks(true);
  } else if (name === "webhooks") loadDeliveries(true);
}

function stopQueueTimer() {
  clearInterval(state.queueTimer);
  state.queueTimer = null;
}

function onTabKey(event) {
  const index = TABS.indexOf(state.tab);
  let next = null;
  if (event.key === "ArrowRight") next = TABS[(index + 1) % TABS.length];
  else if (event.key === "ArrowLeft") next = TABS[(index + TABS.length - 1) % TABS.length];
  else if (event.key === "Home") next = TABS[0];
  else if (event.key === "End") next = TABS[TABS.length - 1];
  if (next) {
    event.preventDefault();
    selectTab(next);
  }
}

// --- overview: queue and providers -----------------------------------------------------

async function loadQueue() {
  let queue;
  try {
    queue = await admin("/admin/queue");
  } catch (error) {
    say("queue-error", problem(error));
    return;
  }
  say("queue-error", "");
  const oldest =
    queue.oldest_due_age_seconds === null || queue.oldest_due_age_seconds === undefined
      ? el("span", { text: "none" })
      : el("span", {}, formatSeconds(queue.oldest_due_age_seconds), " ", el("small", { text: "waiting" }));
  fill(
    "queue",
    definitions(
      [
        ["Due now (waiting for a worker)", String(queue.due)],
        ["In progress", String(queue.in_progress)],
        ["Oldest due task", oldest],
        ["Webhook backlog", String(queue.webhook_backlog)],
      ],
      "stats",
    ),
    queue.oldest_due_at ? el("p", { class: "hint" }, "The oldest has been due since ", timeEl(queue.oldest_due_at), ".") : null,
  );
}

async function loadProviders() {
  fill("providers", el("p", { class: "muted", text: "Checking…" }));
  let reports;
  try {
    reports = await admin("/admin/providers");
  } catch (error) {
    fill("providers");
    say("providers-error", problem(error));
    return;
  }
  state.providersLoaded = true;
  state.providers = reports;
  say("providers-error", "");
  fill(
    "providers",
    table(
      [
        { label: "Provider", cell: (p) => el("strong", { text: p.name }) },
        { label: "Engine", cell: (p) => p.engine },
        { label: "Health", cell: (p) => badge(p.ok ? "ok" : "down") },
        { label: "Reachable", cell: (p) => (p.reachable ? "yes" : "no") },
        { label: "Models", cell: (p) => p.routed_models.map(shortModel).join(", ") || "none" },
        { label: "Detail", cell: (p) => p.detail },
        { label: "Upstream balance", class: "num", cell: (p) => (p.balance === null ? "—" : String(p.balance)) },
        { label: "Latency", class: "num", cell: (p) => (p.latency_ms === null ? "—" : `${Math.round(p.latency_ms)} ms`) },
      ],
      reports,
      { caption: "Providers", empty: "No provider is configured." },
    ),
  );
  ensureFilterChoices();
}

/** The model and provider filters of the tasks tab, from what the providers route. */
async function ensureFilterChoices() {
  if (!state.providers) {
    try {
      state.providers = await admin("/admin/providers");
    } catch {
      return;
    }
  }
  const models = [...new Set(state.providers.flatMap((p) => p.routed_models))].sort();
  refillSelect("task-model", models.map((name) => [name, shortModel(name)]));
  refillSelect("task-provider", state.providers.map((p) => [p.name, p.name]));
}

function refillSelect(id, choices) {
  const select = byId(id);
  const chosen = select.value;
  fill(select, el("option", { value: "", text: "Any" }), choices.map(([value, text]) => el("option", { value, text })));
  if (choices.some(([value]) => value === chosen)) select.value = chosen;
}

// --- accounts, ledger, grants ----------------------------------------------------------

async function loadAccounts(reset) {
  let page;
  try {
    page = await admin("/admin/accounts", { query: { limit: PAGE, cursor: reset ? null : state.accounts.cursor } });
  } catch (error) {
    say("accounts-error", problem(error));
    return;
  }
  say("accounts-error", "");
  state.accounts.items = reset ? page.items : [...state.accounts.items, ...page.items];
  state.accounts.cursor = page.next_cursor;
  byId("accounts-more").hidden = !page.next_cursor;
  renderAccounts();
}

function renderAccounts() {
  const shown = state.account && state.account.account_id;
  fill(
    "accounts",
    table(
      [
        {
          label: "Account",
          cell: (a) =>
            el("button", {
              type: "button",
              class: "link mono",
              text: a.account_id,
              on: { click: () => showAccount(a.account_id) },
            }),
        },
        { label: "Name", cell: (a) => a.name },
        { label: "Balance", class: "num", cell: (a) => a.balance.toLocaleString("en") },
        { label: "Keys", class: "num", cell: (a) => `${a.active_keys} active of ${a.keys}` },
        { label: "Created", cell: (a) => timeEl(a.created_at) },
      ],
      state.accounts.items,
      {
        caption: "Accounts",
        empty: "No accounts yet.",
        rowProps: (a) => ({ dataset: { accountId: a.account_id }, "aria-current": a.account_id === shown ? "true" : null }),
      },
    ),
  );
}

async function showAccount(accountId, { focus = true, balance } = {}) {
  const known = state.accounts.items.find((a) => a.account_id === accountId);
  // An account beyond the pages loaded so far: what is known of it.
  state.account = known || { account_id: accountId, ...(balance === undefined ? {} : { balance }) };
  byId("grant-account").value = accountId;
  renderAccounts();
  byId("account-detail").hidden = false;
  byId("account-title").textContent = `Account ${accountId}`;
  renderAccountFacts();
  await loadLedger(true);
  if (focus) byId("account-title").focus();
}

function renderAccountFacts() {
  const account = state.account;
  fill(
    "account-facts",
    definitions([
      ["Name", account.name ?? null],
      ["Balance", account.balance === undefined ? null : el("strong", { class: "account-balance", text: plural(account.balance, "credit") })],
      ["Keys", account.keys === undefined ? null : `${account.active_keys} active of ${account.keys}`],
      ["Created", account.created_at ? timeEl(account.created_at) : null],
    ]),
  );
}

async function loadLedger(reset) {
  const accountId = state.account.account_id;
  let page;
  try {
    page = await admin(`/admin/accounts/${encodeURIComponent(accountId)}/ledger`, {
      query: { limit: PAGE, cursor: reset ? null : state.ledger.cursor },
    });
  } catch (error) {
    say("ledger-error", problem(error));
    return;
  }
  if (!state.account || state.account.account_id !== accountId) return;
  say("ledger-error", "");
  state.ledger.items = reset ? page.items : [...state.ledger.items, ...page.items];
  state.ledger.cursor = page.next_cursor;
  byId("ledger-more").hidden = !page.next_cursor;
  fill(
    "ledger",
    table(
      [
        { label: "When", cell: (row) => timeEl(row.created_at) },
        { label: "Kind", cell: (row) => row.kind },
        { label: "Amount", class: "num", cell: (row) => (row.amount > 0 ? `+${row.amount}` : String(row.amount)) },
        { label: "Balance after", class: "num", cell: (row) => String(row.balance_after) },
        { label: "Task", cell: (row) => (row.task_id ? taskLink(row.task_id) : "—") },
        { label: "Note", cell: (row) => row.note || "—" },
      ],
      state.ledger.items,
      { caption: "Ledger", empty: "No ledger entries." },
    ),
  );
}

async function grant(event) {
  event.preventDefault();
  const account = byId("grant-account").value.trim();
  const amount = Number(byId("grant-amount").value);
  const note = byId("grant-note").value.trim();
  if (!account || !Number.isInteger(amount) || amount === 0) {
    say("grant-message", "Give an account and a whole number of credits other than 0.");
    return;
  }
  let answer;
  try {
    answer = await admin("/admin/credits/grant", {
      method: "POST",
      body: { account, amount, ...(note ? { note } : {}) },
    });
  } catch (error) {
    say("grant-message", problem(error));
    return;
  }
  const verb = amount > 0 ? `Granted ${plural(amount, "credit")}` : `Took back ${plural(-amount, "credit")}`;
  say("grant-message", `${verb}: ${answer.account_id} now has ${plural(answer.balance, "credit")}.`, "ok");
  byId("grant-amount").value = "";
  byId("grant-note").value = "";
  await loadAccounts(true);
  await showAccount(answer.account_id, { focus: false, balance: answer.balance });
}

// --- keys ------------------------------------------------------------------------------

async function loadKeys() {
  let keys;
  try {
    keys = await admin("/admin/keys");
  } catch (error) {
    say("keys-error", problem(error));
    return;
  }
  say("keys-error", "");
  keys.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  fill(
    "keys",
    table(
      [
        { label: "Key", cell: (k) => el("code", { text: k.key_id }) },
        { label: "Name", cell: (k) => k.name },
        { label: "Starts with", cell: (k) => el("code", { text: `${k.prefix}…` }) },
        {
          label: "Account",
          cell: (k) =>
            el("button", {
              type: "button",
              class: "link mono",
              text: k.account_id,
              on: { click: () => openAccount(k.account_id) },
            }),
        },
        { label: "Balance", class: "num", cell: (k) => k.balance.toLocaleString("en") },
        { label: "Created", cell: (k) => timeEl(k.created_at) },
        {
          label: "State",
          cell: (k) => (k.revoked_at ? el("span", {}, badge("revoked"), " ", timeEl(k.revoked_at)) : badge("active")),
        },
        { label: "", cell: (k) => (k.revoked_at ? "" : revokeControl(k)) },
      ],
      keys,
      { caption: "Keys", empty: "No keys yet.", rowProps: (k) => ({ dataset: { keyId: k.key_id } }) },
    ),
  );
}

/** "Revoke", then a confirmation in place (no blocking dialog). */
function revokeControl(key) {
  const holder = el("span", { class: "inline-actions" });
  const ask = () => {
    fill(
      holder,
      el("button", {
        type: "button",
        class: "danger small",
        text: "Yes, revoke",
        "aria-label": `Yes, revoke ${key.key_id}`,
        on: { click: () => revoke(key, holder) },
      }),
      el("button", { type: "button", class: "secondary small", text: "Keep", on: { click: reset } }),
    );
    holder.querySelector("button").focus();
  };
  const reset = () => {
    fill(
      holder,
      el("button", { type: "button", class: "danger small", text: "Revoke", "aria-label": `Revoke ${key.key_id}`, on: { click: ask } }),
    );
  };
  reset();
  return holder;
}

async function revoke(key, holder) {
  try {
    await admin(`/admin/keys/${encodeURIComponent(key.key_id)}/revoke`, { method: "POST" });
  } catch (error) {
    fill(holder, el("span", { class: "message", role: "alert", text: problem(error) }));
    return;
  }
  await loadKeys();
}

async function createKey(event) {
  event.preventDefault();
  say("key-error", "");
  const name = byId("key-name").value.trim();
  const credits = Number(byId("key-credits").value || "0");
  const accountId = byId("key-account").value.trim();
  if (!name) {
    say("key-error", "Give the key a name.");
    return;
  }
  let created;
  try {
    created = await admin("/admin/keys", {
      method: "POST",
      body: { name, credits, ...(accountId ? { account_id: accountId } : {}) },
    });
  } catch (error) {
    say("key-error", problem(error));
    return;
  }
  byId("new-key").hidden = false;
  byId("new-key-value").textContent = created.key;
  byId("new-key-facts").textContent = `${created.key_id} · "${created.name}" · account ${created.account_id} · balance ${plural(created.balance, "credit")}`;
  byId("new-key-copy").textContent = "Copy";
  byId("key-name").value = "";
  byId("key-account").value = "";
  byId("new-key-copy").focus();
  await loadKeys();
}

async function copyNewKey() {
  const value = byId("new-key-value").textContent;
  try {
    await navigator.clipboard.writeText(value);
    byId("new-key-copy").textContent = "Copied";
  } catch {
    // No clipboard access (an insecure origin): select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents(byId("new-key-value"));
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    byId("new-key-copy").textContent = "Selected: press Ctrl+C";
  }
}

function dismissNewKey() {
  byId("new-key-value").textContent = "";
  byId("new-key").hidden = true;
  byId("key-name").focus();
}

// --- tasks -----------------------------------------------------------------------------

function taskQuery() {
  const query = {
    status: byId("task-status").value,
    model: byId("task-model").value,
    provider: byId("task-provider").value,
    account_id: byId("task-account").value.trim(),
  };
  const age = byId("task-age").value;
  if (age) {
    const [side, seconds] = age.split(":");
    const when = new Date(serverNow() - Number(seconds) * 1000).toISOString();
    query[side === "after" ? "created_after" : "created_before"] = when;
  }
  return query;
}

async function loadTasks(reset) {
  const query = reset ? taskQuery() : state.tasks.query;
  let page;
  try {
    page = await admin("/admin/tasks", { query: { ...query, limit: PAGE, cursor: reset ? null : state.tasks.cursor } });
  } catch (error) {
    say("tasks-error", problem(error));
    return;
  }
  say("tasks-error", "");
  state.tasks.query = query;
  state.tasks.items = reset ? page.items : [...state.tasks.items, ...page.items];
  state.tasks.cursor = page.next_cursor;
  byId("tasks-more").hidden = !page.next_cursor;
  renderTasks();
}

function promptOf(task) {
  const input = (task.request && task.request.input) || {};
  if (typeof input.prompt === "string") return input.prompt;
  if (input.task_id) return `from task ${input.task_id}`;
  if (Array.isArray(input.image_urls) && input.image_urls.length) return `from ${input.image_urls[0]}`;
  return "";
}

function renderTasks() {
  const shown = state.task && state.task.task_id;
  const filtered = Object.values(state.tasks.query).some(Boolean);
  fill(
    "tasks",
    table(
      [
        {
          label: "Task",
          cell: (t) => el("span", { class: "stack" }, taskLink(t.task_id, { short: true }), el("code", { class: "muted", title: t.account_id, text: shortId(t.account_id, 10) })),
        },
        { label: "Status", cell: (t) => badge(t.status) },
        { label: "Model", class: "nowrap", cell: (t) => shortModel(t.model) },
        { label: "Prompt", cell: (t) => el("span", { class: "truncate prompt-cell", text: promptOf(t), title: promptOf(t) }) },
        { label: "Provider", cell: (t) => t.provider || "—" },
        { label: "Tries", class: "num", cell: (t) => String(t.attempts) },
        { label: "Credits", class: "num nowrap", cell: (t) => (t.refunded ? `${t.consumed_credits} (refunded)` : String(t.consumed_credits)) },
        { label: "Error", cell: (t) => (t.error_message ? el("span", { class: "truncate narrow", text: t.error_message, title: t.error_message }) : "—") },
        { label: "Created", class: "nowrap", cell: (t) => el("time", { datetime: t.created_at, title: t.created_at, text: ago(t.created_at) }) },
      ],
      state.tasks.items,
      {
        caption: "Tasks",
        empty: filtered ? "No task matches these filters." : "No tasks yet.",
        rowProps: (t) => ({ dataset: { taskId: t.task_id, status: t.status }, "aria-current": t.task_id === shown ? "true" : null }),
      },
    ),
  );
}

function taskLink(taskId, { short = false } = {}) {
  return el("button", {
    type: "button",
    class: "link mono",
    text: short ? shortId(taskId) : taskId,
    title: short ? taskId : null,
    "aria-label": short ? `Task ${taskId}` : null,
    on: { click: () => openTask(taskId) },
  });
}

function openTask(taskId) {
  if (state.tab !== "tasks") selectTab("tasks", { focus: false });
  showTask(taskId);
}

function openAccount(accountId) {
  if (state.tab !== "accounts") selectTab("accounts", { focus: false });
  showAccount(accountId);
}

async function showTask(taskId) {
  byId("task-detail").hidden = false;
  byId("task-title").textContent = `Task ${taskId}`;
  fill("task-body", el("p", { class: "muted", text: "Loading…" }));
  let task;
  try {
    task = await admin(`/admin/tasks/${encodeURIComponent(taskId)}`);
  } catch (error) {
    fill("task-body", el("p", { class: "message", role: "alert", text: problem(error) }));
    return;
  }
  state.task = task;
  renderTasks();
  const urls = (task.result_urls || []).map(safeUrl).filter(Boolean);
  fill(
    "task-body",
    el("div", { class: "task-head" }, el("h3", { text: shortModel(task.model) }), badge(task.status)),
    promptOf(task) ? el("p", { class: "prompt", text: promptOf(task) }) : null,
    task.error_message
      ? el("p", { class: "message", role: "alert" }, el("strong", { text: "Error: " }), task.error_message)
      : null,
    definitions([
      ["Account", el("button", { type: "button", class: "link mono", text: task.account_id, on: { click: () => openAccount(task.account_id) } })],
      ["Model", task.model],
      ["Provider", task.provider || "—"],
      ["Upstream id", task.upstream_id ? el("code", { text: task.upstream_id }) : "—"],
      ["Provider tries", String(task.attempts)],
      ["Credits", `${task.consumed_credits}${task.refunded ? " (refunded)" : ""}`],
      ["Created", timeEl(task.created_at)],
      ["Completed", timeEl(task.completed_at)],
      ["Next check", task.next_check_at ? timeEl(task.next_check_at) : "—"],
    ]),
    urls.length
      ? el(
          "div",
          { class: "results compact" },
          urls.map((url) =>
            el(
              "figure",
              { class: "result" },
              /\.(mp4|webm|mov)(\?|#|$)/i.test(url)
                ? el("video", { src: url, controls: true, muted: true, playsinline: true, preload: "metadata" })
                : el("img", { src: url, alt: promptOf(task) || "the result" }),
              el("figcaption", {}, el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: url })),
            ),
          ),
        )
      : null,
    el("h3", { text: "Provider state" }),
    el("pre", { class: "code", text: task.provider_state === null ? "none" : json(task.provider_state) }),
    el("details", {}, el("summary", { text: "Request as stored" }), el("pre", { class: "code", text: json(task.request) })),
  );
  byId("task-title").focus();
}

// --- webhook deliveries ----------------------------------------------------------------

function deliveryQuery() {
  return {
    status: byId("delivery-status").value,
    task_id: byId("delivery-task").value.trim(),
    account_id: byId("delivery-account").value.trim(),
  };
}

async function loadDeliveries(reset) {
  const query = reset ? deliveryQuery() : state.deliveries.query;
  let page;
  try {
    page = await admin("/admin/webhooks/deliveries", {
      query: { ...query, limit: PAGE, cursor: reset ? null : state.deliveries.cursor },
    });
  } catch (error) {
    say("deliveries-error", problem(error));
    return;
  }
  say("deliveries-error", "");
  state.deliveries.query = query;
  state.deliveries.items = reset ? page.items : [...state.deliveries.items, ...page.items];
  state.deliveries.cursor = page.next_cursor;
  byId("deliveries-more").hidden = !page.next_cursor;
  renderDeliveries();
}

function attemptText(attempt) {
  const outcome = attempt.status_code !== null ? `HTTP ${attempt.status_code}` : attempt.error || "no answer";
  const extra = attempt.status_code !== null && attempt.error ? ` (${attempt.error})` : "";
  return `${outcome}${extra} · ${attempt.duration_ms} ms`;
}

function renderDeliveries() {
  const filtered = Object.values(state.deliveries.query).some(Boolean);
  fill(
    "deliveries",
    table(
      [
        { label: "Delivery", class: "nowrap", cell: (d) => el("code", { title: String(d.id), text: shortId(d.id) }) },
        { label: "Status", cell: (d) => badge(d.status) },
        {
          label: "Task",
          cell: (d) => el("span", { class: "stack" }, taskLink(d.task_id, { short: true }), el("code", { class: "muted", title: d.account_id, text: shortId(d.account_id, 10) })),
        },
        { label: "URL", cell: (d) => el("span", { class: "truncate", text: d.url, title: d.url }) },
        {
          label: "Attempts",
          cell: (d) => {
            if (!d.attempts.length) return "none yet";
            const last = d.attempts[d.attempts.length - 1];
            return el(
              "details",
              {},
              el("summary", { text: `${d.attempts.length}: last ${attemptText(last)}` }),
              el(
                "ol",
                { class: "attempts" },
                d.attempts.map((attempt) => el("li", {}, timeEl(attempt.at), " ", attemptText(attempt))),
              ),
            );
          },
        },
        {
          label: "Next",
          cell: (d) =>
            d.delivered_at
              ? el("span", {}, "delivered ", timeEl(d.delivered_at))
              : d.next_attempt_at
                ? el("span", {}, "try at ", timeEl(d.next_attempt_at))
                : "no more tries",
        },
        { label: "Created", class: "nowrap", cell: (d) => el("time", { datetime: d.created_at, title: d.created_at, text: ago(d.created_at) }) },
        {
          label: "",
          cell: (d) =>
            d.status === "delivered"
              ? ""
              : el("button", {
                  type: "button",
                  class: "secondary small",
                  text: "Retry now",
                  "aria-label": `Retry delivery ${d.id} now`,
                  on: { click: (event) => retryDelivery(d, event.currentTarget) },
                }),
        },
      ],
      state.deliveries.items,
      {
        caption: "Webhook deliveries",
        empty: filtered ? "No delivery matches these filters." : "No webhook deliveries yet.",
        rowProps: (d) => ({ dataset: { deliveryId: String(d.id), status: d.status } }),
      },
    ),
  );
}

function replaceDelivery(delivery) {
  const index = state.deliveries.items.findIndex((d) => String(d.id) === String(delivery.id));
  if (index >= 0) state.deliveries.items[index] = delivery;
  renderDeliveries();
}

async function retryDelivery(delivery, button) {
  button.disabled = true;
  let answer;
  try {
    answer = await admin(`/admin/webhooks/deliveries/${encodeURIComponent(delivery.id)}/retry`, { method: "POST" });
  } catch (error) {
    button.disabled = false;
    say("deliveries-error", problem(error));
    return;
  }
  say("deliveries-error", "");
  replaceDelivery(answer);
  // Due now: the sender takes it within moments. Watch it until it is settled.
  const until = Date.now() + DELIVERY_WATCH_MS;
  while (Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let page;
    try {
      page = await admin("/admin/webhooks/deliveries", { query: { task_id: answer.task_id, limit: 100 } });
    } catch {
      continue;
    }
    const fresh = page.items.find((d) => String(d.id) === String(answer.id));
    if (!fresh) return;
    replaceDelivery(fresh);
    if (fresh.status !== "pending" || fresh.attempts.length > answer.attempts.length) return;
  }
}

// --- wiring ----------------------------------------------------------------------------

function start() {
  secretForm({
    store: token,
    form: byId("token-form"),
    input: byId("token-input"),
    saved: byId("token-saved"),
    shown: byId("token-shown"),
    forget: byId("forget-token"),
    mask: () => "••••••••",
    onChange: () => {
      say("token-error", "");
      byId("console").hidden = true;
      byId("new-key").hidden = true;
      byId("new-key-value").textContent = "";
      state.providers = null;
      state.providersLoaded = false;
      if (token.get()) probe();
      else stopQueueTimer();
    },
  });
  for (const tab of TABS) {
    byId(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
    byId(`tab-${tab}`).addEventListener("keydown", onTabKey);
  }
  window.addEventListener("hashchange", () => {
    if (!byId("console").hidden && tabFromHash() !== state.tab) selectTab(tabFromHash(), { focus: false });
  });

  byId("queue-refresh").addEventListener("click", loadQueue);
  byId("providers-refresh").addEventListener("click", loadProviders);

  byId("grant-form").addEventListener("submit", grant);
  byId("accounts-refresh").addEventListener("click", () => loadAccounts(true));
  byId("accounts-more").addEventListener("click", () => loadAccounts(false));
  byId("ledger-more").addEventListener("click", () => loadLedger(false));
  byId("account-new-key").addEventListener("click", () => {
    const accountId = state.account && state.account.account_id;
    selectTab("keys", { focus: false });
    byId("key-account").value = accountId || "";
    byId("key-name").focus();
  });
  byId("account-tasks").addEventListener("click", () => {
    byId("task-account").value = (state.account && state.account.account_id) || "";
    selectTab("tasks", { focus: false });
  });

  byId("key-form").addEventListener("submit", createKey);
  byId("keys-refresh").addEventListener("click", loadKeys);
  byId("new-key-copy").addEventListener("click", copyNewKey);
  byId("new-key-dismiss").addEventListener("click", dismissNewKey);

  const tasksForm = byId("task-filters");
  tasksForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loadTasks(true);
  });
  for (const id of ["task-status", "task-model", "task-provider", "task-age"]) {
    byId(id).addEventListener("change", () => loadTasks(true));
  }
  byId("tasks-more").addEventListener("click", () => loadTasks(false));
  byId("task-deliveries").addEventListener("click", () => {
    byId("delivery-task").value = (state.task && state.task.task_id) || "";
    byId("delivery-status").value = "";
    byId("delivery-account").value = "";
    selectTab("webhooks", { focus: false });
  });

  byId("delivery-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadDeliveries(true);
  });
  byId("delivery-status").addEventListener("change", () => loadDeliveries(true));
  byId("deliveries-more").addEventListener("click", () => loadDeliveries(false));

  probe();
}

start();

// The playground: paste a key, submit tasks, watch them finish, browse your history.
// Everything shown is set as text or through DOM properties, never as HTML.

import {
  ApiError,
  api,
  badge,
  byId,
  definitions,
  el,
  fill,
  formatSeconds,
  formatShort,
  formatTime,
  json,
  parseTime,
  plural,
  safeUrl,
  say,
  secret,
  serverNow,
  secretForm,
  shortModel,
  timeEl,
} from "./common.js";

const POLL_MS = 1000;
const HISTORY_PAGE = 10;
const UPSCALE = "grok-imagine/upscale";
const IMAGE_TO_VIDEO = "grok-imagine/image-to-video";
const OPTION_LABELS = {
  aspect_ratio: "Aspect ratio",
  mode: "Mode",
  duration: "Duration",
  resolution: "Resolution",
  index: "Which image (index)",
};
const INTEGER_OPTIONS = new Set(["index"]);

const key = secret("imagine.apiKey");
const state = {
  models: [],
  byName: new Map(),
  balance: null,
  viewing: 0, // bumped whenever another task is shown, so that older polls stop
  current: null, // {taskId, data, live: {progress, percent, elapsed}}
  historyCursor: null,
  tick: null,
};

async function call(path, options = {}) {
  return api(path, { token: key.get(), ...options });
}

// --- the key ---------------------------------------------------------------------------

const NOTHING_SHOWN = "Submit a task, or pick one from your history, to see it here.";

function onKeyChange(value) {
  say("key-error", "");
  say("generate-error", "");
  // Whatever was shown belonged to the previous key.
  state.viewing += 1;
  state.current = null;
  clearInterval(state.tick);
  fill("task-view", el("p", { class: "empty", text: NOTHING_SHOWN }));
  if (!value) {
    state.balance = null;
    byId("balance").hidden = true;
    byId("account-line").textContent = "";
    showHistoryEmpty("Paste an API key to see your tasks.");
    fill("source-task");
    return;
  }
  loadBalance();
  loadHistory(true);
  loadSources();
}

async function loadBalance() {
  if (!key.get()) return null;
  try {
    const credits = await call("/api/credits");
    state.balance = credits.balance;
    byId("balance-value").textContent = credits.balance.toLocaleString("en");
    byId("balance").hidden = false;
    byId("balance").dataset.balance = String(credits.balance);
    byId("account-line").textContent = ` · account ${credits.account_id}`;
    say("key-error", "");
    return credits.balance;
  } catch (error) {
    byId("balance").hidden = true;
    say("key-error", keyProblem(error));
    return null;
  }
}

function keyProblem(error) {
  if (error instanceof ApiError && error.status === 401) {
    return `The API refused this key: ${error.message}. Paste another one, or forget it.`;
  }
  return error.message;
}

// --- models and the form ---------------------------------------------------------------

async function loadModels() {
  try {
    state.models = await api("/api/models");
  } catch (error) {
    say("generate-error", `Could not load the models: ${error.message}`);
    return;
  }
  state.byName = new Map(state.models.map((model) => [model.model, model]));
  const select = byId("model");
  fill(
    select,
    state.models.map((model) =>
      el("option", {
        value: model.model,
        text: `${shortModel(model.model)} · ${plural(model.credits, "credit")}${engineSuffix(model)}`,
        disabled: !model.available,
      }),
    ),
  );
  const filter = byId("history-model");
  fill(
    filter,
    el("option", { value: "", text: "Any" }),
    state.models.map((model) => el("option", { value: model.model, text: shortModel(model.model) })),
  );
  renderModelFields();
}

function engineSuffix(model) {
  if (!model.available) return " (unavailable)";
  if (model.engine === "preview") return " · preview";
  if (model.engine === "ai") return " · AI";
  return "";
}

function selectedModel() {
  return state.byName.get(byId("model").value) || null;
}

function renderModelFields() {
  const model = selectedModel();
  if (!model) return;
  const needsPrompt = model.inputs.includes("prompt");
  const needsSource = !needsPrompt && model.inputs.length > 0;
  const takesUrl = model.model !== UPSCALE && model.inputs.some((input) => input.includes("image_urls"));
  byId("prompt-field").hidden = !needsPrompt;
  byId("source-field").hidden = !needsSource;
  byId("source-url-choice").hidden = !takesUrl;
  byId("source-url-field").hidden = !takesUrl;
  if (!takesUrl) byId("source-kind-task").checked = true;
  syncSourceKind();

  const engine =
    model.engine === "preview"
      ? "Preview engine: placeholder files made offline, not AI output."
      : model.engine === "ai"
        ? `AI engine, served by ${model.routes.join(", then ")}.`
        : "";
  fill(
    "model-info",
    model.description,
    " ",
    el("span", { class: `engine engine-${model.engine || "none"}`, text: engine }),
    model.available ? null : el("strong", { text: " No configured provider serves this model now." }),
  );

  // The optional inputs: keep what was picked where the next model has the same one.
  const previous = new Map(
    [...byId("options").querySelectorAll("select")].map((select) => [select.dataset.option, select.value]),
  );
  fill(
    "options",
    Object.entries(model.options).map(([name, values]) => {
      const id = `option-${name}`;
      const select = el(
        "select",
        { id, name, dataset: { option: name } },
        el("option", { value: "", text: "Default" }),
        values.map((value) => el("option", { value, text: name === "duration" ? `${value} s` : value })),
      );
      if (values.includes(previous.get(name))) select.value = previous.get(name);
      return el("div", { class: "field" }, el("label", { for: id, text: OPTION_LABELS[name] || name }), select);
    }),
  );
  byId("submit").textContent = `Generate · ${plural(model.credits, "credit")}`;
  byId("submit").disabled = !model.available;
  updateCounter();
}

function syncSourceKind() {
  const byUrl = byId("source-kind-url").checked;
  byId("source-task").disabled = byUrl;
  byId("source-url").disabled = !byUrl;
}

function updateCounter() {
  const length = byId("prompt").value.length;
  byId("prompt-count").textContent = length ? `${length.toLocaleString("en")} / 5,000` : "";
}

function formBody() {
  const model = selectedModel();
  const input = {};
  if (model.inputs.includes("prompt")) input.prompt = byId("prompt").value;
  else if (model.inputs.length > 0) {
    if (byId("source-kind-url").checked) input.image_urls = [byId("source-url").value.trim()];
    else if (byId("source-task").value) input.task_id = byId("source-task").value;
  }
  for (const select of byId("options").querySelectorAll("select")) {
    if (!select.value) continue;
    const name = select.dataset.option;
    input[name] = INTEGER_OPTIONS.has(name) ? Number(select.value) : select.value;
  }
  const body = { model: model.model, input };
  if (byId("public").checked) body.public = true;
  return body;
}

async function submit(body, errorTarget = "generate-error") {
  say("generate-error", "");
  if (!key.get()) {
    say(errorTarget, "Paste an API key first (above).");
    byId("key-input").focus();
    return;
  }
  const model = state.byName.get(body.model);
  const button = byId("submit");
  button.disabled = true;
  try {
    const created = await call("/api/generate", { method: "POST", body });
    showTask(created.task_id, null, { focus: true, fresh: true });
    loadBalance();
    loadHistory(true);
  } catch (error) {
    let message = error.message;
    if (error instanceof ApiError && error.status === 402 && model) {
      const balance = await loadBalance();
      if (balance !== null && model.credits > balance) {
        message += ` (${plural(model.credits - balance, "credit")} missing)`;
      }
    }
    say(errorTarget, message);
    if (error instanceof ApiError && error.status === 401) say("key-error", keyProblem(error));
  } finally {
    button.disabled = !(model && model.available);
  }
}

// --- one task --------------------------------------------------------------------------

function showTask(taskId, data, { focus = false, fresh = false } = {}) {
  const mine = ++state.viewing;
  clearInterval(state.tick);
  // `watched`: seen unfinished (or just submitted), so its end changes balance and history.
  state.current = { taskId, data: null, live: null, watched: fresh };
  if (data) render(data);
  else fill("task-view", el("p", { class: "muted", text: `Loading ${taskId}…` }));
  markCurrent();
  if (focus) byId("task-title").focus({ preventScroll: window.innerWidth > 900 });
  poll(mine, taskId, 0, data !== null && data.status !== "IN_PROGRESS");
}

async function poll(mine, taskId, failures, once) {
  if (mine !== state.viewing) return;
  let data;
  try {
    data = await call("/api/status", { query: { task_id: taskId } });
  } catch (error) {
    if (mine !== state.viewing) return;
    if (error instanceof ApiError && error.status !== 0 && error.status !== 503 && error.status !== 429) {
      fill("task-view", el("p", { class: "message", dataset: { kind: "error" }, role: "alert", text: error.message }));
      return;
    }
    // Lost contact, or the server is busy: say so, and try again a little later.
    setLiveNote(`Could not refresh (${error.message}); trying again…`);
    setTimeout(() => poll(mine, taskId, failures + 1, once), Math.min(10_000, POLL_MS * 2 ** failures));
    return;
  }
  if (mine !== state.viewing) return;
  const current = state.current;
  if (current.data && current.data.status === "IN_PROGRESS") current.watched = true;
  render(data);
  if (data.status === "IN_PROGRESS") {
    current.watched = true;
    if (!once) setTimeout(() => poll(mine, taskId, 0, false), POLL_MS);
  } else if (current.watched) {
    // It ended while we watched: the balance may have come back, the history changed.
    current.watched = false;
    loadBalance();
    loadHistory(true);
    if (data.status === "SUCCESS") loadSources();
  }
}

function setLiveNote(text) {
  const note = byId("task-note");
  if (note) note.textContent = text;
}

function render(data) {
  const current = state.current;
  const sameStatus = current.data && current.data.status === data.status;
  current.data = data;
  if (sameStatus && current.live) {
    updateLive(data);
    return;
  }
  clearInterval(state.tick);
  current.live = null;
  fill("task-view", taskArticle(data));
  if (data.status === "IN_PROGRESS") {
    updateLive(data);
    state.tick = setInterval(() => updateElapsed(state.current.data), 1000);
  }
}

function updateLive(data) {
  const live = state.current.live;
  if (!live) return;
  if (typeof data.progress === "number") {
    live.progress.value = data.progress;
    live.percent.textContent = `${data.progress} %`;
  } else {
    live.progress.removeAttribute("value");
    live.percent.textContent = "";
  }
  setLiveNote("");
  updateElapsed(data);
}

function updateElapsed(data) {
  const live = state.current && state.current.live;
  const created = parseTime(data && data.created_at);
  if (!live || created === null) return;
  live.elapsed.textContent = `${formatSeconds((serverNow() - created) / 1000)} elapsed`;
}

function describeInput(input) {
  if (!input) return "";
  if (typeof input.prompt === "string") return input.prompt;
  if (input.task_id) return `from task ${input.task_id}`;
  if (Array.isArray(input.image_urls) && input.image_urls.length) return `from ${input.image_urls[0]}`;
  return "";
}

function isVideo(url) {
  return /\.(mp4|webm|mov)(\?|#|$)/i.test(url);
}

function taskArticle(data) {
  const request = data.request || {};
  const input = request.input || {};
  const model = state.byName.get(request.model);
  const urls = (data.response && data.response.resultUrls) || [];
  const article = el("article", { class: "task", dataset: { taskId: data.task_id, status: data.status } });

  article.append(
    el("div", { class: "task-head" }, el("h3", { text: shortModel(request.model) || "task" }), badge(data.status)),
  );
  const described = describeInput(input);
  if (described) article.append(el("p", { class: "prompt", text: described }));

  if (data.status === "IN_PROGRESS") {
    const progress = el("progress", { max: "100", "aria-label": "Progress" });
    const percent = el("span", { class: "percent" });
    const elapsed = el("span", { class: "elapsed muted" });
    article.append(
      el(
        "div",
        { class: "live" },
        progress,
        el("div", { class: "live-text" }, percent, elapsed),
        el("p", { id: "task-note", class: "muted", "aria-live": "polite" }),
      ),
    );
    state.current.live = { progress, percent, elapsed };
  }
  if (data.status === "FAILED" && data.error_message) {
    article.append(
      el("p", { class: "message", dataset: { kind: "error" }, role: "alert" }, el("strong", { text: "Failed: " }), data.error_message),
    );
    if (data.consumed_credits === 0 && model) {
      article.append(el("p", { class: "muted", text: `The ${plural(model.credits, "credit")} came back to your balance.` }));
    }
  }

  if (urls.length) {
    article.append(
      el(
        "div",
        { class: "results" },
        urls.map((url, index) => resultFigure(url, index, described, data)),
      ),
    );
  }

  const actions = el("div", { class: "actions" });
  const output = model ? model.output : urls.some(isVideo) ? "video" : "image";
  if (data.status === "SUCCESS" && output === "image") {
    for (const [name, label] of [
      [UPSCALE, "Upscale this"],
      [IMAGE_TO_VIDEO, "Animate this"],
    ]) {
      const chained = state.byName.get(name);
      if (!chained || !chained.available) continue;
      actions.append(
        el("button", {
          type: "button",
          class: "primary",
          dataset: { chain: name },
          text: `${label} · ${plural(chained.credits, "credit")}`,
          on: { click: () => submit({ model: name, input: { task_id: data.task_id } }, "chain-error") },
        }),
      );
    }
  }
  if (data.status === "IN_PROGRESS") {
    actions.append(
      el("button", { type: "button", class: "secondary", text: "Cancel", on: { click: () => cancel(data.task_id) } }),
    );
  }
  if (actions.childElementCount) article.append(actions);
  article.append(el("p", { id: "chain-error", class: "message", role: "alert", hidden: true }));

  const options = Object.entries(input).filter(([name]) => !["prompt", "task_id", "image_urls"].includes(name));
  const took =
    data.completed_at && parseTime(data.created_at) !== null
      ? formatSeconds((parseTime(data.completed_at) - parseTime(data.created_at)) / 1000)
      : null;
  article.append(
    definitions([
      ["Task", el("code", { text: data.task_id })],
      ["Model", request.model || "—"],
      ["Created", timeEl(data.created_at)],
      ["Completed", data.completed_at ? timeEl(data.completed_at) : null],
      ["Took", took],
      ["Credits", String(data.consumed_credits)],
      ["Source task", input.task_id ? sourceButton(input.task_id) : null],
      ["Options", options.length ? options.map(([name, value]) => `${name} ${value}`).join(", ") : null],
      ["Public", request.public ? "yes, in the gallery" : "no"],
    ]),
    el("details", {}, el("summary", { text: "Request as stored" }), el("pre", { class: "code", text: json(request) })),
  );
  return article;
}

function sourceButton(taskId) {
  return el("button", { type: "button", class: "link", text: taskId, on: { click: () => showTask(taskId, null, { focus: true }) } });
}

function resultFigure(url, index, described, data) {
  const safe = safeUrl(url);
  if (!safe) return el("p", { class: "muted", text: url });
  const name = `${data.task_id}-${index}${(safe.match(/\.[a-z0-9]+(?=$|[?#])/i) || [""])[0]}`;
  const media = isVideo(safe)
    ? el("video", { src: safe, controls: true, playsinline: true, loop: true, muted: true, autoplay: true, preload: "auto" })
    : el("img", { src: safe, alt: described || "the result", decoding: "async" });
  if (media.tagName === "VIDEO") media.muted = true; // the attribute alone doesn't mute for autoplay
  return el(
    "figure",
    { class: "result" },
    media,
    el(
      "figcaption",
      {},
      el("a", { href: safe, download: name, class: "button secondary", text: "Download" }),
      el("a", { href: safe, target: "_blank", rel: "noopener noreferrer", class: "button link", text: "Open" }),
    ),
  );
}

async function cancel(taskId) {
  try {
    const answer = await call("/api/cancel", { method: "POST", body: { task_id: taskId } });
    if (state.current && state.current.taskId === taskId) showTask(taskId, null);
    loadBalance();
    loadHistory(true);
    return answer;
  } catch (error) {
    say("chain-error", error.message);
    return null;
  }
}

// --- history and sources ---------------------------------------------------------------

function markCurrent() {
  const shown = state.current && state.current.taskId;
  for (const row of byId("history-list").querySelectorAll(".task-row")) {
    if (row.dataset.taskId === shown) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
}

function showHistoryEmpty(text) {
  fill("history-list");
  byId("history-more").hidden = true;
  const empty = byId("history-empty");
  empty.textContent = text;
  empty.hidden = !text;
}

async function loadHistory(reset) {
  if (!key.get()) {
    showHistoryEmpty("Paste an API key to see your tasks.");
    return;
  }
  const query = {
    status: byId("history-status").value,
    model: byId("history-model").value,
    limit: HISTORY_PAGE,
    cursor: reset ? null : state.historyCursor,
  };
  let page;
  try {
    page = await call("/api/tasks", { query });
  } catch (error) {
    say("history-error", error.message);
    return;
  }
  say("history-error", "");
  const list = byId("history-list");
  if (reset) list.replaceChildren();
  for (const item of page.items) list.append(historyRow(item));
  // Nothing shown yet (the page just opened): show the newest task.
  if (reset && state.current === null && page.items.length) showTask(page.items[0].task_id, page.items[0]);
  markCurrent();
  state.historyCursor = page.next_cursor;
  byId("history-more").hidden = !page.next_cursor;
  const empty = byId("history-empty");
  empty.hidden = list.childElementCount > 0;
  empty.textContent = query.status || query.model ? "No task matches these filters." : "No tasks yet: make one above.";
}

function historyRow(item) {
  const request = item.request || {};
  const urls = (item.response && item.response.resultUrls) || [];
  const first = urls.length ? safeUrl(urls[0]) : null;
  let thumb;
  // A video's thumbnail is its frame at half a second (#t=: a media fragment).
  if (first && isVideo(first)) thumb = el("video", { src: `${first}#t=0.5`, muted: true, preload: "metadata", "aria-hidden": "true" });
  else if (first) thumb = el("img", { src: first, alt: "", decoding: "async" });
  else thumb = el("span", { class: "placeholder", "aria-hidden": "true", text: item.status === "FAILED" ? "×" : "…" });
  const described = describeInput(request.input) || shortModel(request.model);
  return el(
    "li",
    {},
    el(
      "button",
      {
        type: "button",
        class: "task-row",
        dataset: { taskId: item.task_id, status: item.status },
        on: { click: () => showTask(item.task_id, item, { focus: true }) },
      },
      el("span", { class: "thumb" }, thumb),
      el(
        "span",
        { class: "row-main" },
        el("span", { class: "row-prompt", text: described }),
        el("span", {
          class: "row-meta",
          text: `${shortModel(request.model)} · ${formatShort(item.created_at)} · ${plural(item.consumed_credits, "credit")}`,
        }),
      ),
      badge(item.status),
    ),
  );
}

async function loadSources() {
  const select = byId("source-task");
  if (!key.get()) return;
  const imageModels = state.models.filter((model) => model.output === "image").map((model) => model.model);
  let items = [];
  try {
    const pages = await Promise.all(
      imageModels.map((model) => call("/api/tasks", { query: { status: "SUCCESS", model, limit: 20 } })),
    );
    items = pages.flatMap((page) => page.items);
  } catch (error) {
    say("generate-error", `Could not list your images: ${error.message}`);
    return;
  }
  items.sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0));
  const chosen = select.value;
  fill(
    select,
    items.length
      ? items.map((item) => {
          const words = describeInput(item.request.input) || item.task_id;
          const label = `${words.length > 48 ? `${words.slice(0, 47)}…` : words} · ${shortModel(item.request.model)} · ${formatTime(item.created_at)}`;
          return el("option", { value: item.task_id, text: label });
        })
      : el("option", { value: "", text: "No finished images yet" }),
  );
  if (items.some((item) => item.task_id === chosen)) select.value = chosen;
}

// --- wiring ----------------------------------------------------------------------------

function start() {
  secretForm({
    store: key,
    form: byId("key-form"),
    input: byId("key-input"),
    saved: byId("key-saved"),
    shown: byId("key-shown"),
    forget: byId("forget-key"),
    onChange: onKeyChange,
  });
  byId("model").addEventListener("change", () => {
    say("generate-error", "");
    renderModelFields();
  });
  byId("prompt").addEventListener("input", updateCounter);
  byId("source-kind-task").addEventListener("change", syncSourceKind);
  byId("source-kind-url").addEventListener("change", syncSourceKind);
  byId("source-refresh").addEventListener("click", loadSources);
  byId("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (selectedModel()) submit(formBody());
  });
  byId("history-status").addEventListener("change", () => loadHistory(true));
  byId("history-model").addEventListener("change", () => loadHistory(true));
  byId("history-refresh").addEventListener("click", () => loadHistory(true));
  byId("history-more").addEventListener("click", () => loadHistory(false));

  loadModels().then(() => onKeyChange(key.get()));
}

start();

"""Every answer of every route matches what the server's own OpenAPI document declares.

A real `imagine serve` is driven through a realistic scenario over HTTP: keys made with
the admin API, tasks of every model, polling, a cancelled task, waits, replays, lists and
their cursors, the gallery, webhooks, result files, and the typical refusals (401, 402,
404, 409, 422, 429, 400, 413, 431). A recorder sends each request and checks its answer
against the document the server serves at /openapi.json:

- the status code is one the document declares for the operation;
- the content type is one declared for that status (an empty body where none is);
- a JSON body validates against the declared schema (`$ref`s resolved in the document),
  is the envelope `{"code", "message", "data"}` with `code` equal to the HTTP status,
  and, for an error, is the declared ErrorEnvelope with `data: null`;
- each declared response header that is present matches its schema.

Schema problems are collected and reported together at the end. Then every (method,
path) in the document must have been exercised, each with at least one success; a new
route without a step here fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import jsonschema_rs
import orjson
import pytest

from tests.support.listener import Listener
from tests.support.receiver import Receiver, receiver
from tests.support.server import ADMIN_TOKEN, ServerProcess

JSON = Any
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
ERROR_ENVELOPE = "#/components/schemas/ErrorEnvelope"
UNDOCUMENTED = {("POST", "/callbacks/{provider}/{task_id}/{token}")}
"""Routes the document leaves out on purpose (where upstream providers call back)."""
GENERATE_LIMIT = 40
"""Per key and minute: the main key stays well under it, the flood key goes over."""

ENV = {
    # Long enough for a cancel to reach a task before it ends; short enough to wait for.
    "IMAGINE_PREVIEW_DELAY": "1",
    # Webhooks go to receivers on loopback.
    "IMAGINE_ALLOW_PRIVATE_URLS": "true",
    "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "0.3s",
    # Limits set, so that the X-RateLimit-* headers are sent and checked; status polling
    # never comes near its limit.
    "IMAGINE_RATE_LIMIT_GENERATE": f"{GENERATE_LIMIT}/minute",
    "IMAGINE_RATE_LIMIT_STATUS": "100000/minute",
}

TEXT_TO_IMAGE = "grok-imagine/text-to-image"
TEXT_TO_VIDEO = "grok-imagine/text-to-video"
IMAGE_TO_VIDEO = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _pointer(parts: list[str | int]) -> str:
    return "/" + "/".join(str(part) for part in parts)


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    """The path template as the document names it: /api/gallery/{task_id}."""
    status: int


@dataclass
class Recorder:
    """Sends requests through one client, records them and checks each answer against
    the document; `problems` lists every mismatch found."""

    client: httpx.Client = field(repr=False)
    document: dict[str, JSON] = field(repr=False)
    exchanges: list[Exchange] = field(default_factory=list, repr=False)
    undocumented: list[Exchange] = field(default_factory=list, repr=False)
    problems: dict[str, int] = field(default_factory=dict, repr=False)
    """Each mismatch found, and how many answers had it (polling repeats them)."""
    _validators: dict[str, jsonschema_rs.Validator] = field(default_factory=dict, repr=False)

    def problem(self, text: str) -> None:
        self.problems[text] = self.problems.get(text, 0) + 1

    def get(self, template: str, **options: Any) -> httpx.Response:
        return self.call("GET", template, **options)

    def post(self, template: str, **options: Any) -> httpx.Response:
        return self.call("POST", template, **options)

    def delete(self, template: str, **options: Any) -> httpx.Response:
        return self.call("DELETE", template, **options)

    def call(
        self,
        method: str,
        template: str,
        *,
        expect: int | tuple[int, ...],
        key: str | None = None,
        params: dict[str, str] | None = None,
        json: JSON = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        **path: str,
    ) -> httpx.Response:
        """One request to `template` with its `path` parameters filled in (quoted);
        `key` is sent as the bearer token. The status must be one of `expect`."""
        url = template.format(**{name: quote(value, safe="") for name, value in path.items()})
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        answer = self.client.request(
            method, url, params=params, json=json, content=content, headers=sent
        )
        expected = (expect,) if isinstance(expect, int) else expect
        assert answer.status_code in expected, (
            f"{method} {url}: expected {expect}, got {answer.status_code}: {answer.text[:500]}"
        )
        exchange = Exchange(method, template, answer.status_code)
        operation = self.document["paths"].get(template, {}).get(method.lower())
        if operation is None:
            assert (method, template) in UNDOCUMENTED, f"{method} {template}: not in the document"
            self.undocumented.append(exchange)
            self._check_undocumented(exchange, answer)
        else:
            self.exchanges.append(exchange)
            self._check(exchange, operation, answer)
        return answer

    def _check(self, exchange: Exchange, operation: JSON, answer: httpx.Response) -> None:
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        declared = _declared_response(operation, exchange.status)
        if declared is None:
            return  # reported once, by `undeclared_statuses`
        content: dict[str, JSON] = declared.get("content") or {}
        if not content:
            if answer.content:
                self.problem(f"{where}: a body where the document declares none")
            return
        media = _media_type(answer.headers.get("content-type", ""))
        declared_media = {_media_type(name): body for name, body in content.items()}
        if media not in declared_media:
            self.problem(f"{where}: content type {media!r}, declared: {sorted(declared_media)}")
            return
        self._check_headers(where, declared.get("headers") or {}, answer)
        if media != "application/json":
            return
        try:
            body = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            self.problem(f"{where}: not JSON: {answer.text[:200]!r}")
            return
        schema = declared_media[media].get("schema")
        if schema is None:
            self.problem(f"{where}: JSON answer without a declared schema")
            return
        if exchange.status >= 400 and schema != {"$ref": ERROR_ENVELOPE}:
            self.problem(f"{where}: an error declared with {schema}, not {ERROR_ENVELOPE}")
        for error in self._validator(schema).iter_errors(body):
            self.problem(f"{where}: at {_pointer(error.instance_path)}: {error.message}")
        self._check_envelope(where, exchange.status, body)

    def _check_undocumented(self, exchange: Exchange, answer: httpx.Response) -> None:
        """A route the document leaves out: its errors still come in the envelope."""
        where = f"{exchange.method} {exchange.path} (undocumented) -> {exchange.status}"
        if exchange.status < 400:
            return
        if _media_type(answer.headers.get("content-type", "")) != "application/json":
            self.problem(f"{where}: an error that is not JSON")
            return
        body = orjson.loads(answer.content)
        for error in self._validator({"$ref": ERROR_ENVELOPE}).iter_errors(body):
            self.problem(f"{where}: at {_pointer(error.instance_path)}: {error.message}")
        self._check_envelope(where, exchange.status, body)

    def _check_envelope(self, where: str, status: int, body: JSON) -> None:
        if not isinstance(body, dict) or set(body) != {"code", "message", "data"}:
            shown = sorted(body) if isinstance(body, dict) else type(body).__name__
            self.problem(f"{where}: not the envelope {{code, message, data}}: {shown}")
            return
        if body["code"] != status:
            self.problem(f"{where}: code {body['code']!r} in a {status} answer")
        if status >= 400:
            if body["data"] is not None:
                self.problem(f"{where}: an error with data {body['data']!r}, not null")
            if not isinstance(body["message"], str) or not body["message"]:
                self.problem(f"{where}: an error without a message")

    def _check_headers(self, where: str, declared: dict[str, JSON], answer: httpx.Response) -> None:
        for name, header in declared.items():
            value: JSON = answer.headers.get(name)
            if value is None:
                continue
            schema = header.get("schema") or {}
            if schema.get("type") in ("integer", "number"):
                try:
                    value = int(value) if schema["type"] == "integer" else float(value)
                except ValueError:
                    self.problem(f"{where}: header {name}: {value!r} is not a number")
                    continue
            for error in self._validator(schema).iter_errors(value):
                self.problem(f"{where}: header {name}: {error.message}")

    def _validator(self, schema: dict[str, JSON]) -> jsonschema_rs.Validator:
        """A validator for a schema of the document; its `$ref`s point into the
        document's components, carried along so that they resolve."""
        cache_key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        if cache_key not in self._validators:
            rooted = {**schema, "components": self.document.get("components", {})}
            self._validators[cache_key] = jsonschema_rs.Draft202012Validator(rooted)
        return self._validators[cache_key]

    def declared_operations(self) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, operations in self.document["paths"].items()
            for method in operations
            if method in HTTP_METHODS
        }

    def exercised_operations(self) -> set[tuple[str, str]]:
        return {(exchange.method, exchange.path) for exchange in self.exchanges}

    def undeclared_statuses(self) -> list[Exchange]:
        return sorted(
            {
                exchange
                for exchange in self.exchanges
                if _declared_response(self._operation(exchange), exchange.status) is None
            },
            key=lambda exchange: (exchange.path, exchange.method, exchange.status),
        )

    def verdict(self) -> list[str]:
        """What is wrong, section by section; empty when everything matched."""
        failures = []
        if self.problems:
            listed = [
                f"  {text}" + (f" (x{count})" if count > 1 else "")
                for text, count in self.problems.items()
            ]
            failures.append("answers that do not match the document:\n" + "\n".join(listed))
        undeclared = [
            f"  {ex.method} {ex.path} -> {ex.status}" for ex in self.undeclared_statuses()
        ]
        if undeclared:
            failures.append("statuses the document does not declare:\n" + "\n".join(undeclared))
        missing = sorted(self.declared_operations() - self.exercised_operations())
        if missing:
            listed = [f"  {method} {path}" for method, path in missing]
            failures.append("operations of the document no step exercises:\n" + "\n".join(listed))
        without_success = [
            f"  {operation}"
            for operation, statuses in self.coverage().items()
            if not any(status < 400 for status in statuses)
        ]
        if without_success:
            failures.append(
                "operations never answered with a success:\n" + "\n".join(without_success)
            )
        return failures

    def coverage(self) -> dict[str, list[int]]:
        """Each operation and the statuses it answered with, for failure messages."""
        seen: dict[str, set[int]] = {}
        for exchange in self.exchanges:
            seen.setdefault(f"{exchange.method} {exchange.path}", set()).add(exchange.status)
        return {operation: sorted(statuses) for operation, statuses in sorted(seen.items())}

    def _operation(self, exchange: Exchange) -> JSON:
        return self.document["paths"][exchange.path][exchange.method.lower()]


def _declared_response(operation: JSON, status: int) -> JSON | None:
    responses: dict[str, JSON] = operation.get("responses", {})
    for name in (str(status), f"{status // 100}XX", "default"):
        if name in responses:
            return responses[name]
    return None


def _eventually(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def _data(answer: httpx.Response) -> JSON:
    return answer.json()["data"]


@dataclass(frozen=True)
class Keys:
    main: str
    account: str
    spare_id: str
    """A second key of the main account, revoked on the way."""
    spare: str
    broke: str
    """No credits: generate answers 402."""
    stranger: str
    """Another account: the main account's tasks are unknown to it."""
    flood: str
    """Spent on the generate rate limit."""


@dataclass
class Tasks:
    image: str = ""
    """Public, with a webhook that is refused once, then accepted."""
    waited: str = ""
    """Public, made with Prefer: wait=60."""
    video: str = ""
    """Public, later taken out of the gallery."""
    animated: str = ""
    upscaled: str = ""
    """With a webhook that nothing receives."""
    cancelled: str = ""

    @property
    def ids(self) -> list[str]:
        return [self.image, self.waited, self.video, self.animated, self.upscaled, self.cancelled]


def _generate(
    api: Recorder, key: str, body: JSON, headers: dict[str, str] | None = None
) -> httpx.Response:
    return api.post("/api/generate", key=key, json=body, headers=headers, expect=200)


def _wait_done(api: Recorder, key: str, task_id: str, *, by_post: bool = False) -> JSON:
    """Poll the status (GET, or POST with a JSON body) until the task ends."""
    found: dict[str, JSON] = {}

    def ended() -> bool:
        if by_post:
            answer = api.post("/api/status", key=key, json={"task_id": task_id}, expect=200)
        else:
            answer = api.get("/api/status", key=key, params={"task_id": task_id}, expect=200)
        found.update(_data(answer))
        return bool(found["status"] != "IN_PROGRESS")

    _eventually(ended, f"task {task_id} ended")
    return found


def _operations_routes(api: Recorder) -> None:
    health = api.get("/healthz", expect=200)
    assert _data(health) == {"status": "ok"}
    ready = api.get("/readyz", expect=200)
    assert _data(ready) == {"status": "ready"}
    metrics = api.get("/metrics", expect=200)
    assert "# HELP" in metrics.text
    api.get("/healthz", headers={"X-Padding": "x" * 20_000}, expect=431)
    api.get("/metrics", headers={"X-Padding": "x" * 20_000}, expect=431)


def _admin_keys(api: Recorder) -> Keys:
    def create(body: JSON) -> JSON:
        return _data(api.post("/admin/keys", key=ADMIN_TOKEN, json=body, expect=200))

    main = create({"name": "wire main", "credits": 10_000})
    spare = create({"name": "wire spare", "account_id": main["account_id"]})
    keys = Keys(
        main=main["key"],
        account=main["account_id"],
        spare_id=spare["key_id"],
        spare=spare["key"],
        broke=create({"name": "wire broke"})["key"],
        stranger=create({"name": "wire stranger", "credits": 100})["key"],
        flood=create({"name": "wire flood"})["key"],
    )
    api.post("/admin/keys", json={"name": "nobody"}, expect=401)
    api.post("/admin/keys", key="not-the-token", json={"name": "nobody"}, expect=401)
    api.post("/admin/keys", key=ADMIN_TOKEN, json={"name": ""}, expect=422)
    api.post("/admin/keys", key=ADMIN_TOKEN, json={"name": "x", "extra": 1}, expect=422)
    api.post("/admin/keys", key=ADMIN_TOKEN, content=b"{not json", expect=400)
    api.post("/admin/keys", key=ADMIN_TOKEN, content=b"", expect=400)
    unknown_account = {"name": "x", "account_id": "acc_nobody"}
    api.post("/admin/keys", key=ADMIN_TOKEN, json=unknown_account, expect=404)
    # Over IMAGINE_MAX_BODY_BYTES (64 KiB).
    api.post("/admin/keys", key=ADMIN_TOKEN, content=b"x" * 100_000, expect=413)

    listed = _data(api.get("/admin/keys", key=ADMIN_TOKEN, expect=200))
    assert {row["key_id"] for row in listed} >= {spare["key_id"], main["key_id"]}
    api.get("/admin/keys", expect=401)

    grant = {"account": keys.account, "amount": 50, "note": "wire test"}
    api.post("/admin/credits/grant", key=ADMIN_TOKEN, json=grant, expect=200)
    by_key_id = {"account": spare["key_id"], "amount": -10}
    api.post("/admin/credits/grant", key=ADMIN_TOKEN, json=by_key_id, expect=200)
    nobody = {"account": "acc_nobody", "amount": 5}
    api.post("/admin/credits/grant", key=ADMIN_TOKEN, json=nobody, expect=404)
    no_amount = {"account": keys.account}
    api.post("/admin/credits/grant", key=ADMIN_TOKEN, json=no_amount, expect=422)
    api.post("/admin/credits/grant", key=ADMIN_TOKEN, content=b"[", expect=400)
    api.post("/admin/credits/grant", json=grant, expect=401)

    providers = _data(api.get("/admin/providers", key=ADMIN_TOKEN, expect=200))
    assert any(report["name"] == "preview" for report in providers)
    api.get("/admin/providers", key="not-the-token", expect=401)
    return keys


def _account_routes(api: Recorder, keys: Keys) -> None:
    assert _data(api.get("/api/credits", key=keys.main, expect=200))["balance"] == 10_040
    api.get("/api/credits", expect=401)
    api.get("/api/credits", key="sk-nobody", expect=401)

    models = _data(api.get("/api/models", expect=200))
    assert {model["model"] for model in models} == {
        TEXT_TO_IMAGE,
        TEXT_TO_VIDEO,
        IMAGE_TO_VIDEO,
        UPSCALE,
    }

    secret = _data(api.get("/api/webhook-secret", key=keys.main, expect=200))["secret"]
    rotated = _data(api.post("/api/webhook-secret/rotate", key=keys.main, expect=200))
    assert rotated["secret"] != secret
    api.get("/api/webhook-secret", expect=401)
    api.post("/api/webhook-secret/rotate", key="sk-nobody", expect=401)


def _tasks_of_every_model(api: Recorder, keys: Keys, hook: Receiver, refusing: Listener) -> Tasks:
    tasks = Tasks()
    key = keys.main

    # A public image with a webhook, sent twice with one Idempotency-Key.
    first = {
        "model": TEXT_TO_IMAGE,
        "input": {"prompt": "a lighthouse in the fog", "aspect_ratio": "16:9"},
        "public": True,
        "callback_url": hook.url,
    }
    once = {"Idempotency-Key": "wire-once"}
    created = _data(_generate(api, key, first, once))
    assert created["status"] == "IN_PROGRESS"
    tasks.image = created["task_id"]
    replayed = _generate(api, key, first, once)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert _data(replayed)["task_id"] == tasks.image
    other_body = {**first, "input": {"prompt": "something else"}}
    api.post("/api/generate", key=key, json=other_body, headers=once, expect=422)

    # Prefer: wait=N answers with the finished task's status data.
    waited = _generate(
        api,
        key,
        {"input": {"prompt": "waves at dusk"}, "public": True},
        {"Prefer": "wait=60"},
    )
    assert waited.headers["Preference-Applied"] == "wait=60"
    assert _data(waited)["status"] == "SUCCESS"
    tasks.waited = _data(waited)["task_id"]

    video = {"model": TEXT_TO_VIDEO, "input": {"prompt": "a fox running"}, "public": True}
    tasks.video = _data(_generate(api, key, video))["task_id"]

    assert _wait_done(api, key, tasks.image)["status"] == "SUCCESS"
    animate = {"model": IMAGE_TO_VIDEO, "input": {"task_id": tasks.image, "mode": "normal"}}
    tasks.animated = _data(_generate(api, key, animate))["task_id"]
    refused_hook = f"http://127.0.0.1:{refusing.port}/hook"  # every delivery fails
    upscale = {"model": UPSCALE, "input": {"task_id": tasks.image}, "callback_url": refused_hook}
    tasks.upscaled = _data(_generate(api, key, upscale))["task_id"]
    tasks.cancelled = _cancel_one_in_progress(api, key)
    for task_id in (tasks.video, tasks.animated):
        assert _wait_done(api, key, task_id, by_post=True)["status"] == "SUCCESS"
    assert _wait_done(api, key, tasks.upscaled)["status"] == "SUCCESS"
    return tasks


def _generate_refusals(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    key = keys.main
    image = {"input": {"prompt": "refused"}}
    api.post("/api/generate", json=image, expect=401)
    api.post("/api/generate", key="sk-nobody", json=image, expect=401)
    api.post("/api/generate", key=keys.broke, json=image, expect=402)
    api.post("/api/generate", key=key, json={**image, "model": "paint"}, expect=422)
    api.post("/api/generate", key=key, json={"model": UPSCALE, "input": {}}, expect=422)
    not_ours = {"model": UPSCALE, "input": {"task_id": tasks.image}}
    api.post("/api/generate", key=keys.stranger, json=not_ours, expect=422)
    api.post("/api/generate", key=key, content=b"{", expect=400)
    api.post("/api/generate", key=key, content=b"", expect=400)
    too_large = b'{"input":{"prompt":"' + b"x" * 100_000 + b'"}}'
    api.post("/api/generate", key=key, content=too_large, expect=413)
    api.post("/api/generate", key=key, json=image, headers={"X-Padding": "x" * 20_000}, expect=431)
    _exhaust_the_rate_limit(api, keys.flood)


def _status_and_cancel_refusals(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    key = keys.main
    for send in (_status_by_get, _status_by_post):
        send(api, None, {"task_id": tasks.image}, 401)
        send(api, "sk-nobody", {"task_id": tasks.image}, 401)
        send(api, keys.stranger, {"task_id": tasks.image}, 404)
        send(api, key, {"task_id": "t0123456789abcdef"}, 404)
        send(api, key, {}, 422)
    api.get("/api/status", key=key, params={"task_id": "t" * 101}, expect=422)
    api.post("/api/status", key=key, json={"task_id": ""}, expect=422)
    api.post("/api/status", key=key, json={"task_id": "t1", "more": 1}, expect=422)
    api.post("/api/status", key=key, content=b"{nope", expect=400)
    by_query = api.post("/api/status", key=key, params={"task_id": tasks.cancelled}, expect=200)
    assert _data(by_query)["status"] == "FAILED"

    api.post("/api/cancel", key=key, json={"task_id": tasks.cancelled}, expect=409)
    api.post("/api/cancel", key=key, params={"task_id": tasks.waited}, expect=409)
    api.post("/api/cancel", key=keys.stranger, json={"task_id": tasks.video}, expect=404)
    api.post("/api/cancel", json={"task_id": tasks.video}, expect=401)
    api.post("/api/cancel", key=key, json={}, expect=422)
    api.post("/api/cancel", key=key, expect=422)
    api.post("/api/cancel", key=key, content=b"]", expect=400)


def _status_by_get(api: Recorder, key: str | None, query: dict[str, str], expect: int) -> None:
    api.get("/api/status", key=key, params=query, expect=expect)


def _status_by_post(api: Recorder, key: str | None, body: dict[str, str], expect: int) -> None:
    api.post("/api/status", key=key, json=body, expect=expect)


def _cancel_one_in_progress(api: Recorder, key: str) -> str:
    """A task cancelled before it ends (FAILED). Should one finish first on a slow
    machine, its cancel answers 409, and another is tried."""
    for _ in range(10):
        task_id: str = _data(_generate(api, key, {"input": {"prompt": "never mind"}}))["task_id"]
        cancelled = api.post("/api/cancel", key=key, json={"task_id": task_id}, expect=(200, 409))
        if cancelled.status_code == 200:
            assert _data(cancelled)["status"] == "FAILED"
            ended = _wait_done(api, key, task_id)
            assert ended["status"] == "FAILED"
            return task_id
    raise AssertionError("every task ended before its cancel came")


def _exhaust_the_rate_limit(api: Recorder, key: str) -> None:
    """Generate calls of a key without credits (each refused with 402, each counted)
    until the limit answers 429."""
    for _ in range(3 * GENERATE_LIMIT):
        answer = api.post(
            "/api/generate", key=key, json={"input": {"prompt": "x"}}, expect=(402, 429)
        )
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            return
    raise AssertionError(f"{3 * GENERATE_LIMIT} calls and the limit never answered 429")


def _lists(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    key = keys.main
    listed: list[str] = []
    cursor: str | None = None
    for _ in range(len(tasks.ids) + 2):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = _data(api.get("/api/tasks", key=key, params=params, expect=200))
        listed += [item["task_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(tasks.ids) <= set(listed)
    failed = _data(api.get("/api/tasks", key=key, params={"status": "FAILED"}, expect=200))
    assert tasks.cancelled in {item["task_id"] for item in failed["items"]}
    api.get("/api/tasks", key=key, params={"model": UPSCALE, "status": "SUCCESS"}, expect=200)
    assert _data(api.get("/api/tasks", key=keys.stranger, expect=200))["items"] == []
    for refused in ({"cursor": "nonsense"}, {"status": "DONE"}, {"limit": "0"}, {"model": "x"}):
        api.get("/api/tasks", key=key, params=refused, expect=422)
    api.get("/api/tasks", expect=401)

    shown: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = _data(api.get("/api/gallery", params=params, expect=200))
        shown += [item["task_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(shown) == {tasks.image, tasks.waited, tasks.video}
    api.get("/api/gallery", params={"model": TEXT_TO_VIDEO}, expect=200)
    for refused in ({"limit": "101"}, {"cursor": "!"}, {"model": "x"}):
        api.get("/api/gallery", params=refused, expect=422)

    page = api.get("/gallery", expect=200)
    assert tasks.image in page.text
    api.get("/gallery", params={"model": TEXT_TO_IMAGE, "limit": "1"}, expect=200)
    api.get("/gallery", params={"limit": "many"}, expect=422)

    api.delete("/api/gallery/{task_id}", key=keys.stranger, task_id=tasks.video, expect=404)
    removed = api.delete("/api/gallery/{task_id}", key=key, task_id=tasks.video, expect=200)
    assert _data(removed) == {"task_id": tasks.video, "public": False}
    api.delete("/api/gallery/{task_id}", key=key, task_id="t0123456789abcdef", expect=404)
    api.delete("/api/gallery/{task_id}", task_id=tasks.image, expect=401)
    api.delete("/api/gallery/{task_id}", key=key, task_id="t\x00", expect=400)


def _webhooks(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    key = keys.main

    def deliveries(task_id: str) -> list[JSON]:
        params = {"task_id": task_id}
        found: list[JSON] = _data(api.get("/api/webhooks", key=key, params=params, expect=200))
        return found

    # The receiver refuses the first attempt (500) and accepts the retry.
    _eventually(
        lambda: [got["status"] for got in deliveries(tasks.image)] == ["delivered"],
        "the image task's webhook delivered",
    )
    # Nothing listens behind the upscale task's callback_url: attempts without an answer.
    _eventually(
        lambda: [got["status"] for got in deliveries(tasks.upscaled)] == ["failed"],
        "the upscale task's webhook given up",
    )
    assert len(_data(api.get("/api/webhooks", key=key, expect=200))) == 2
    assert deliveries(tasks.waited) == []
    params = {"task_id": tasks.image}
    api.get("/api/webhooks", key=keys.stranger, params=params, expect=404)
    api.get("/api/webhooks", key=key, params={"task_id": "t0123456789abcdef"}, expect=404)
    api.get("/api/webhooks", key=key, params={"task_id": "t\x00"}, expect=422)
    api.get("/api/webhooks", params=params, expect=401)


def _admin_console(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    """The console's views, after the webhooks have settled (one delivered, one failed)."""
    admin = ADMIN_TOKEN
    first = _data(api.get("/admin/accounts", key=admin, params={"limit": "2"}, expect=200))
    assert first["next_cursor"] is not None
    after = {"cursor": first["next_cursor"]}
    assert _data(api.get("/admin/accounts", key=admin, params=after, expect=200))["items"]
    api.get("/admin/accounts", key=admin, params={"cursor": "nonsense"}, expect=422)
    api.get("/admin/accounts", expect=401)

    ledger = "/admin/accounts/{account_id}/ledger"
    page = _data(api.get(ledger, key=admin, account_id=keys.account, expect=200))
    assert {entry["kind"] for entry in page["items"]} >= {"grant", "adjustment", "debit"}
    api.get(ledger, key=admin, account_id="acc_nobody", expect=404)
    api.get(ledger, key=admin, account_id="acc\x00", expect=400)
    api.get(ledger, key=admin, account_id=keys.account, params={"limit": "0"}, expect=422)
    api.get(ledger, account_id=keys.account, expect=401)

    mine = {"account_id": keys.account, "limit": "2"}
    page = _data(api.get("/admin/tasks", key=admin, params=mine, expect=200))
    listed = [item["task_id"] for item in page["items"]]
    while page["next_cursor"] is not None:
        more = {**mine, "cursor": page["next_cursor"]}
        page = _data(api.get("/admin/tasks", key=admin, params=more, expect=200))
        listed += [item["task_id"] for item in page["items"]]
    assert set(tasks.ids) <= set(listed)
    failed = {"status": "FAILED", "model": TEXT_TO_IMAGE, "provider": "preview"}
    page = _data(api.get("/admin/tasks", key=admin, params=failed, expect=200))
    assert tasks.cancelled in {item["task_id"] for item in page["items"]}
    window = {"created_after": "2000-01-01T00:00:00Z", "created_before": "2100-01-01T00:00:00Z"}
    api.get("/admin/tasks", key=admin, params=window, expect=200)
    api.get("/admin/tasks", key=admin, params={"created_after": "soon"}, expect=422)
    api.get("/admin/tasks", key="not-the-token", expect=401)

    one = "/admin/tasks/{task_id}"
    for task_id in (tasks.image, tasks.cancelled, tasks.video):
        assert _data(api.get(one, key=admin, task_id=task_id, expect=200))["task_id"] == task_id
    api.get(one, key=admin, task_id="t0123456789abcdef", expect=404)
    api.get(one, key=admin, task_id="t\x00", expect=400)
    api.get(one, task_id=tasks.image, expect=401)

    deliveries = "/admin/webhooks/deliveries"
    by_task: dict[str, JSON] = {}
    for task_id in (tasks.image, tasks.upscaled):
        found = _data(api.get(deliveries, key=admin, params={"task_id": task_id}, expect=200))
        (by_task[task_id],) = found["items"]
    gave_up = _data(api.get(deliveries, key=admin, params={"status": "failed"}, expect=200))
    assert by_task[tasks.upscaled]["id"] in {item["id"] for item in gave_up["items"]}
    api.get(deliveries, key=admin, params={"status": "lost"}, expect=422)
    api.get(deliveries, expect=401)

    retry = "/admin/webhooks/deliveries/{delivery_id}/retry"
    retried = api.post(retry, key=admin, delivery_id=by_task[tasks.upscaled]["id"], expect=200)
    assert _data(retried)["status"] in ("pending", "failed")  # nothing listens: fails again
    api.post(retry, key=admin, delivery_id=by_task[tasks.image]["id"], expect=409)
    api.post(retry, key=admin, delivery_id="msg_nobody", expect=404)
    api.post(retry, key=admin, delivery_id="msg\x00", expect=400)
    api.post(retry, delivery_id=by_task[tasks.image]["id"], expect=401)

    queue = _data(api.get("/admin/queue", key=admin, expect=200))
    assert queue["in_progress"] >= queue["due"] >= 0
    api.get("/admin/queue", expect=401)


def _files(api: Recorder, keys: Keys, tasks: Tasks) -> None:
    def file_of(task_id: str) -> dict[str, str]:
        status = api.get("/api/status", key=keys.main, params={"task_id": task_id}, expect=200)
        url = _data(status)["response"]["resultUrls"][0]
        owner, name = urlsplit(url).path.split("/")[-2:]
        return {"task_id": owner, "name": name}

    template = "/files/{task_id}/{name}"
    image = file_of(tasks.upscaled)
    whole = api.get(template, **image, expect=200)
    assert whole.headers["content-type"] == "image/png"
    api.get(template, **file_of(tasks.animated), expect=200)
    api.get(template, headers={"Range": "bytes=0-9"}, **image, expect=206)
    api.get(template, headers={"Range": "bytes=0-1,4-5"}, **image, expect=206)
    api.get(template, headers={"If-None-Match": whole.headers["etag"]}, **image, expect=304)
    api.get(template, headers={"Range": "bytes=zzz"}, **image, expect=400)
    api.get(template, headers={"Range": "bytes=99999999-"}, **image, expect=416)
    api.get(template, task_id=image["task_id"], name="7.png", expect=404)


def _upstream_callbacks(api: Recorder, tasks: Tasks) -> None:
    """Where providers call back: left out of the document, its refusals still come in
    the envelope. A wrong token is an unknown callback."""
    template = "/callbacks/{provider}/{task_id}/{token}"
    for provider in ("kie", "preview"):
        api.post(
            template,
            provider=provider,
            task_id=tasks.upscaled,
            token="not-the-token",
            json={},
            expect=404,
        )


def _admin_after(api: Recorder, keys: Keys) -> None:
    ledger = _data(
        api.get("/admin/credits/{account}", key=ADMIN_TOKEN, account=keys.account, expect=200)
    )
    assert {entry["kind"] for entry in ledger["ledger"]} >= {"grant", "debit"}
    api.get("/admin/credits/{account}", key=ADMIN_TOKEN, account=keys.spare_id, expect=200)
    api.get("/admin/credits/{account}", key=ADMIN_TOKEN, account="acc_nobody", expect=404)
    api.get("/admin/credits/{account}", key=ADMIN_TOKEN, account="acc\x00", expect=400)
    api.get("/admin/credits/{account}", account=keys.account, expect=401)

    revoke = "/admin/keys/{key_id}/revoke"
    revoked = _data(api.post(revoke, key=ADMIN_TOKEN, key_id=keys.spare_id, expect=200))
    assert revoked["revoked_at"] is not None
    api.get("/api/credits", key=keys.spare, expect=401)
    api.post(revoke, key=ADMIN_TOKEN, key_id="key_nobody", expect=404)
    api.post(revoke, key=ADMIN_TOKEN, key_id="key\x00", expect=400)
    api.post(revoke, key_id=keys.spare_id, expect=401)


@pytest.fixture
def wire(
    make_server: Callable[..., ServerProcess],
) -> Iterator[tuple[Recorder, Receiver, Listener]]:
    with receiver(answers=(500,)) as hook, Listener() as refusing:
        server = make_server(ENV)
        document = httpx.get(f"{server.url}/openapi.json", timeout=60).json()
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
            yield Recorder(client, document), hook, refusing


def test_every_route_answers_as_the_document_declares(
    wire: tuple[Recorder, Receiver, Listener],
) -> None:
    api, hook, refusing = wire
    _operations_routes(api)
    keys = _admin_keys(api)
    _account_routes(api, keys)
    tasks = _tasks_of_every_model(api, keys, hook, refusing)
    _generate_refusals(api, keys, tasks)
    _status_and_cancel_refusals(api, keys, tasks)
    _lists(api, keys, tasks)
    _webhooks(api, keys, tasks)
    _admin_console(api, keys, tasks)
    _files(api, keys, tasks)
    _upstream_callbacks(api, tasks)
    _admin_after(api, keys)

    failures = api.verdict()
    if failures:
        exercised = "\n".join(f"  {op}: {codes}" for op, codes in api.coverage().items())
        pytest.fail("\n\n".join([*failures, f"exercised:\n{exercised}"]), pytrace=False)

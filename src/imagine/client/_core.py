"""The SDK's logic, once for both clients: each operation is a generator that yields
steps (send this request, sleep this long, tell the caller of a new state, hand out an
item) and receives each request's outcome. `Client` and `AsyncClient` only perform the
steps, one with blocking calls, the other with awaits; retries, waiting, paging and the
reading of answers live here.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeAlias, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from imagine import __version__
from imagine.client._errors import (
    Conflict,
    ConnectionFailed,
    ImagineError,
    RateLimited,
    TaskFailed,
    WaitTimeout,
    error_class,
)
from imagine.client._models import (
    Account,
    BaseTask,
    Model,
    parse_account,
    parse_model,
)

DEFAULT_MODEL = "grok-imagine/text-to-image"
DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take (connect, read, write each), unless the server was asked to
hold its answer (`Prefer: wait`): that time is added."""
DEFAULT_MAX_RETRIES = 3
MAX_SERVER_WAIT = 60
"""The longest `Prefer: wait=N` the server honours."""
STATUS_HOLD = 20
"""The longest a status poll asks the server to hold its answer (where it can)."""
POLL_FIRST = 0.25
POLL_FACTOR = 1.5
POLL_CAP = 5.0
"""Polling a task: the first pause, its growth, its ceiling (seconds)."""
USER_AGENT = f"imagine-python/{__version__}"

T = TypeVar("T")
R = TypeVar("R")
TaskT = TypeVar("TaskT", bound=BaseTask)


@dataclass(frozen=True)
class Request:
    """One HTTP request to make (each attempt of it)."""

    method: str
    url: str
    headers: Mapping[str, str]
    params: Mapping[str, str | int] | None = None
    json: Any = None
    idempotent: bool = True
    """Whether sending it twice does no harm: then it is retried after an answer that may
    have come after the server acted (5xx, a reset, a read timeout)."""
    extra_read: float = 0.0
    """Seconds added to the read timeout: the server was asked to hold the answer."""
    stream_to: Path | None = None
    """Stream a successful answer's body into this file instead of memory."""
    follow_redirects: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Notify:
    """Call `callback(task)`; an async client awaits what it returns, if awaitable."""

    callback: Callable[[Any], object]
    task: BaseTask


@dataclass(frozen=True)
class Emit(Generic[T]):
    """Hand `item` to the caller of an iterator."""

    item: T


Step: TypeAlias = Request | Sleep | Notify
Outcome: TypeAlias = httpx.Response | httpx.HTTPError
"""What a request step receives: the answer, or the error that stopped it."""
Flow: TypeAlias = Generator[Step, Any, R]
Stream: TypeAlias = Generator[Step | Emit[T], Any, None]
MakeTask: TypeAlias = Callable[[Mapping[str, Any], Mapping[str, Any] | None], TaskT]
"""Builds the client's task type from a status answer's `data` (and the generate body)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures: exponential backoff with full jitter, or the
    server's `Retry-After` when it gives one (up to `max_retry_after`; a longer one is
    raised at once, as `RateLimited` with its `retry_after`)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0
    random: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds before retry number `retry` (0 for the first), or None to give up."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.random(0.0, min(self.backoff_cap, self.backoff_base * 2**retry))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date; None when unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from_response(response: httpx.Response, attempts: int = 1) -> ImagineError:
    """The typed error of an error answer, carrying its envelope."""
    text = response.text
    envelope: Mapping[str, Any] | None = None
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping):
        envelope = parsed
    message = ""
    code: int | None = None
    if envelope is not None:
        given = envelope.get("message", envelope.get("msg", envelope.get("detail")))
        message = given if isinstance(given, str) else ""
        code = envelope.get("code") if isinstance(envelope.get("code"), int) else None
    message = message or text.strip()[:300] or response.reason_phrase or "error"
    kind = error_class(response.status_code)
    details: dict[str, Any] = {
        "status_code": response.status_code,
        "code": code,
        "body": text,
        "envelope": envelope,
        "headers": response.headers,
        "attempts": attempts,
    }
    if kind is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(message, retry_after=retry_after, **details)
    return kind(message, **details)


def _connection_error(exc: httpx.HTTPError, request: Request, attempts: int) -> ImagineError:
    if not isinstance(exc, httpx.TransportError):
        return ImagineError(f"{request.method} {request.url}: {exc}", attempts=attempts)
    what = type(exc).__name__
    detail = str(exc) or what
    return ConnectionFailed(
        f"{request.method} {request.url}: no answer ({what}: {detail})", attempts=attempts
    )


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before the request left: retrying them can't repeat anything."""


def call(request: Request, policy: RetryPolicy) -> Flow[httpx.Response]:
    """Send `request` until it is answered without error, retrying transient failures:
    429 always (the server refused before acting), connection failures before sending
    always, 5xx, resets and read timeouts only when the request is idempotent."""
    attempts = 0
    while True:
        outcome: Outcome = yield request
        attempts += 1
        retry_after: float | None = None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code < 400:
                return outcome
            error = error_from_response(outcome, attempts)
            transient = outcome.status_code in (408, 429) or outcome.status_code >= 500
            harmless = outcome.status_code == 429
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
            cause: BaseException | None = None
        else:
            error = _connection_error(outcome, request, attempts)
            transient = isinstance(outcome, httpx.TransportError)
            harmless = isinstance(outcome, _NOT_SENT)
            cause = outcome
        delay = policy.delay(attempts - 1, retry_after) if transient else None
        if delay is None or not (harmless or request.idempotent):
            raise error from cause
        yield Sleep(delay)


def envelope_data(response: httpx.Response) -> Any:
    """The `data` of a success envelope."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping) or "data" not in body:
        raise ImagineError(
            f"{response.request.method} {response.request.url}: the answer is not the API's "
            f"envelope (HTTP {response.status_code})",
            status_code=response.status_code,
            body=response.text,
            headers=response.headers,
        )
    return body["data"]


def _same_origin(url: str, base_url: str) -> bool:
    one, other = urlsplit(url), urlsplit(base_url)
    return (one.scheme, one.hostname, one.port) == (other.scheme, other.hostname, other.port)


_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}")


def result_name(task_id: str, index: int, url: str) -> str:
    """The file name of a task's result: `<task_id>-<index><extension of the URL>`."""
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id).lstrip(".") or "task"
    suffix = PurePosixPath(urlsplit(url).path).suffix
    extension = suffix.lower() if _EXTENSION.fullmatch(suffix) else ".bin"
    return f"{safe_id}-{index}{extension}"


def generate_body(
    prompt: str | None,
    *,
    model: str,
    image_urls: str | Sequence[str] | None,
    task_id: str | None,
    callback_url: str | None,
    public: bool,
    options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON body of POST /api/generate: the inputs under `input`, the options too."""
    given: dict[str, Any] = {}
    if prompt is not None:
        given["prompt"] = prompt
    if image_urls is not None:
        given["image_urls"] = [image_urls] if isinstance(image_urls, str) else list(image_urls)
    if task_id is not None:
        given["task_id"] = task_id
    for name, value in (options or {}).items():
        if name in given:
            raise ValueError(f"options: {name!r} is an argument of its own; pass it so")
        if value is not None:
            given[name] = value
    body: dict[str, Any] = {"model": model if "/" in model else f"grok-imagine/{model}"}
    body["input"] = given
    if callback_url is not None:
        body["callback_url"] = callback_url
    if public:
        body["public"] = True
    return body


class Core(Generic[TaskT]):
    """Every operation of the API as a flow, for a client whose tasks are `TaskT`."""

    def __init__(
        self, base_url: str, api_key: str | None, policy: RetryPolicy, make: MakeTask[TaskT]
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.policy = policy
        self.make = make

    def headers(self, url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The key goes only to the configured server, never to a result's other host."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key is not None and _same_origin(url, self.base_url):
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> Request:
        url = self.base_url + path
        return Request(method, url, headers=self.headers(url, headers), **details)

    def data(self, request: Request) -> Flow[Any]:
        response = yield from call(request, self.policy)
        return envelope_data(response)

    # The operations.

    def generate(
        self,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None,
        wait: bool,
        timeout: float | None,
    ) -> Flow[TaskT]:
        started = time.monotonic()
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        hold = 0
        if wait:
            hold = MAX_SERVER_WAIT if timeout is None else int(min(timeout, MAX_SERVER_WAIT))
        if hold > 0:
            headers["Prefer"] = f"wait={hold}"
        # With an idempotency key, a retry replays the first attempt's task instead of
        # creating (and charging for) another one.
        request = self.request(
            "POST", "/api/generate", headers=headers, json=body, extra_read=float(hold)
        )
        task = self.make((yield from self.data(request)), body)
        if wait and not task.done:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            task = yield from self.wait(task, timeout=left, on_update=None)
        return task

    def run(self, generated: Flow[TaskT]) -> Flow[TaskT]:
        task = yield from generated
        if task.failed:
            raise TaskFailed(task)
        return task

    def status_request(self, task_id: str, hold: int = 0) -> Request:
        headers = {"Prefer": f"wait={hold}"} if hold > 0 else None
        return self.request(
            "GET",
            "/api/status",
            params={"task_id": task_id},
            headers=headers,
            extra_read=float(hold),
        )

    def status(self, task_id: str) -> Flow[TaskT]:
        return self.make((yield from self.data(self.status_request(task_id))), None)

    def wait(
        self,
        task: TaskT | str,
        *,
        timeout: float | None,
        on_update: Callable[[Any], object] | None,
    ) -> Flow[TaskT]:
        """Poll until the task ends: pauses grow from POLL_FIRST by POLL_FACTOR up to
        POLL_CAP, a `Retry-After` is honoured, and each poll asks the server to hold its
        answer (`Prefer: wait`) where it can, so a server that does needs fewer polls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = (yield from self.status(task)) if isinstance(task, str) else task
        if isinstance(task, str) and on_update is not None:
            yield Notify(on_update, last)
        pause = POLL_FIRST
        while not last.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(
                    f"task {last.task_id} still {last.status} after {timeout:g} s", task=last
                )
            hold = STATUS_HOLD if left is None else int(min(left, STATUS_HOLD))
            try:
                response = yield from call(self.status_request(last.task_id, hold), self.policy)
            except RateLimited as limited:
                wait_for = max(pause, limited.retry_after or 0.0)
                yield Sleep(wait_for if left is None else min(wait_for, left))
                continue
            current = self.make(envelope_data(response), None)
            if current != last and on_update is not None:
                yield Notify(on_update, current)
            last = current
            if last.done:
                break
            if hold > 0 and response.headers.get("preference-applied", "").startswith("wait="):
                continue  # the server held the answer: no pause needed
            suggested = parse_retry_after(response.headers.get("retry-after"))
            wait_for = max(pause, suggested) if suggested is not None else pause
            left = None if deadline is None else deadline - time.monotonic()
            yield Sleep(wait_for if left is None else max(0.0, min(wait_for, left)))
            pause = min(pause * POLL_FACTOR, POLL_CAP)
        return last

    def tasks(
        self,
        *,
        status: str | None,
        model: str | None,
        limit: int | None,
        page_size: int | None,
    ) -> Stream[TaskT]:
        """Every task of the caller, newest first, page by page along the server's cursor."""
        cursor: str | None = None
        handed = 0
        size = page_size or 100
        while limit is None or handed < limit:
            params: dict[str, str | int] = {
                "limit": size if limit is None else min(size, limit - handed)
            }
            if status is not None:
                params["status"] = status
            if model is not None:
                params["model"] = model if "/" in model else f"grok-imagine/{model}"
            if cursor is not None:
                params["cursor"] = cursor
            page = yield from self.data(self.request("GET", "/api/tasks", params=params))
            for item in page.get("items") or ():
                yield Emit(self.make(item, None))
                handed += 1
                if limit is not None and handed >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def account(self) -> Flow[Account]:
        return parse_account((yield from self.data(self.request("GET", "/api/credits"))))

    def models(self) -> Flow[list[Model]]:
        listed = yield from self.data(self.request("GET", "/api/models"))
        return [parse_model(item) for item in listed]

    def cancel(self, task_id: str) -> Flow[TaskT]:
        request = self.request("POST", "/api/cancel", json={"task_id": task_id})
        try:
            yield from self.data(request)
        except Conflict as ended:
            # A retry after an attempt whose answer was lost: that attempt may have been
            # the cancel that ended the task. Either way it has ended; report it.
            if ended.attempts <= 1:
                raise
        return (yield from self.status(task_id))

    def download(self, task: TaskT, directory: Path) -> Flow[list[Path]]:
        if task.failed:
            raise TaskFailed(task)
        if not task.done:
            raise ImagineError(f"task {task.task_id} is still {task.status}; wait for it first")
        directory.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        for index, given in enumerate(task.result_urls):
            url = given if urlsplit(given).scheme else urljoin(self.base_url + "/", given)
            path = directory / result_name(task.task_id, index, url)
            request = Request(
                "GET",
                url,
                headers={**self.headers(url), "Accept": "*/*"},
                stream_to=path,
                follow_redirects=True,
            )
            yield from call(request, self.policy)
            saved.append(path)
        return saved


def request_timeout(base: httpx.Timeout, extra_read: float) -> httpx.Timeout:
    """`base`, with `extra_read` seconds more to read (None stays no limit)."""
    if not extra_read or base.read is None:
        return base
    return httpx.Timeout(
        connect=base.connect, read=base.read + extra_read, write=base.write, pool=base.pool
    )


class PartFile:
    """A download's file: written beside its target and moved in place once complete,
    so a cut-off download never leaves a partial file under the final name."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = target.with_name(f".{target.name}.part")
        self._file = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def commit(self) -> None:
        self._file.close()
        self.partial.replace(self.target)

    def discard(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)

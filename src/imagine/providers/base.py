"""What a provider is: an asynchronous state machine behind `submit` and `poll`.

Submitting and polling are separate steps so that the upstream id is stored the moment it
is known: a restart polls the task instead of paying upstream for it twice. Providers
know nothing of credits or of our database; the worker turns their answers into task
transitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from imagine.config import Settings


@dataclass(frozen=True, slots=True)
class Artifact:
    """One result: its bytes with their content type."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Remote:
    """One result still at the provider. Upstream URLs expire (kie: within a day), so the
    worker copies it into our storage before the task ends."""

    url: str


@dataclass(frozen=True, slots=True)
class SourceTask:
    """The earlier task that `input.task_id` named, as the provider needs to see it."""

    task_id: str
    model: str
    provider: str
    upstream_id: str | None
    result_urls: list[str]
    result_sizes: list[list[int] | None] = field(default_factory=list)
    """[width, height] of each image result where known (tasks of earlier versions and
    videos: None or absent)."""


@dataclass(frozen=True, slots=True)
class Job:
    task_id: str
    model: str
    account_id: str
    input: Mapping[str, Any]
    upstream_id: str | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    source: SourceTask | None = None
    callback: Mapping[str, Any] | None = None
    """The upstream's callback payload, when one arrived (already authenticated)."""
    callback_token: str = ""
    """The task's secret for the callback URL the provider is given."""


@dataclass(frozen=True, slots=True)
class Submitted:
    upstream_id: str
    poll_after: float
    """Seconds until the first poll is worth making."""
    state: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None
    """The result, when the provider answered synchronously (xAI images)."""


@dataclass(frozen=True, slots=True)
class Pending:
    poll_after: float
    progress: int | None = None
    """Percent done, 0-100, where the provider reports it (see `percent`)."""


@dataclass(frozen=True, slots=True)
class Succeeded:
    results: list[Artifact | Remote]


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


Outcome = Pending | Succeeded | Failed


class ProviderError(Exception):
    """A call that didn't work. `retryable` ones are tried again with backoff (and, before
    the upstream has the task, on the next route) until the task's deadline; the others
    fail the task (and refund it) with `message`, which the user reads.

    `failover`: the provider is down for a while (maintenance); move to the next route now.
    `operator`: only the operator can fix it (credentials, the upstream balance); it is
    logged as an error and counted in metrics.
    `max_attempts`: a retryable error that is given this many tries in all; then the task
    fails with `message` (a source image that keeps answering 5xx).
    `deferred`: not a failure: the step could not start yet (capacity this account
    already uses) and is tried again after `retry_after`, without counting a try.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        failover: bool = False,
        operator: bool = False,
        max_attempts: int | None = None,
        deferred: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.failover = failover
        self.operator = operator
        self.max_attempts = max_attempts
        self.deferred = deferred


class CallbackRejected(Exception):
    """An upstream callback that can't be trusted or read; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Health:
    """What `imagine providers check` shows for one provider."""

    ok: bool
    """Reached, and our credentials were accepted."""
    reachable: bool
    detail: str
    balance: float | None = None
    latency_ms: float | None = None


SourceLoader = Callable[[str, str], Awaitable[bytes]]
"""Fetches a source image by URL (ours, or a user's) for an account, returns its bytes."""


class Provider(Protocol):
    name: str
    engine: Literal["preview", "ai"]
    polls_remotely: bool
    """Whether `poll` is one status query to an upstream service (kie, xAI), cheap enough
    for an API process's inline refresh; not when it renders or computes here."""
    models: frozenset[str]
    """The models it can serve at all; routing never sends it any other."""
    trusted_hosts: frozenset[str]
    """Hosts the operator configured for it: its results may be fetched from them even
    on private addresses (a provider on the local network)."""

    def refusal(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> str | None:
        """Why this provider can't run this particular task (None when it can). Asked at
        routing time, so the user gets a 400 instead of a task that fails later."""
        ...

    async def submit(self, job: Job) -> Submitted: ...

    async def poll(self, job: Job) -> Outcome: ...

    async def check(self) -> Health: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CallbackReceiver(Protocol):
    """A provider that is told of results by an upstream callback, not only by polling."""

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, upstream_id: str | None
    ) -> dict[str, Any]:
        """The callback's payload once it is proven to come from the upstream; raises
        CallbackRejected otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What a provider module's `create(context)` gets from the server."""

    settings: Settings
    load_source: SourceLoader
    is_own_url: Callable[[str], bool]
    callback_url: Callable[[str, str, str], str]
    """(provider name, task id, token) -> the URL the upstream calls back."""
    user_agent: str


def source_image_url(given: Mapping[str, Any], source: SourceTask | None) -> str | None:
    """The image a task starts from: the chosen result of its source task, or its URL."""
    if source is not None:
        index = int(given.get("index") or 0)
        return source.result_urls[index] if index < len(source.result_urls) else None
    urls = given.get("image_urls") or []
    return str(urls[0]) if urls else None


def source_index_problem(given: Mapping[str, Any], source: SourceTask | None) -> str | None:
    """`input.index` past the source task's images, for providers that use our copies."""
    if source is None:
        return None
    index = int(given.get("index") or 0)
    count = len(source.result_urls)
    if index < count:
        return None
    return f"input.index: task {source.task_id} has {count} image(s); use 0 to {count - 1}"


def source_image_size(given: Mapping[str, Any], source: SourceTask | None) -> list[int] | None:
    """[width, height] of the source task's chosen image, where it was recorded."""
    if source is None:
        return None
    index = int(given.get("index") or 0)
    return source.result_sizes[index] if index < len(source.result_sizes) else None


def percent(value: Any) -> int | None:
    """A provider's progress figure as a whole percent, 0-100; None when there is none or
    it can't be read. Providers write it as a number of percent (xAI's `40`), as text
    (`"40"`, `"40%"`), or as a fraction written with a decimal point (`"0.40"`, as kie's
    older record APIs do): a value with a decimal point from 0 to 1 is a fraction."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    if text.endswith("%"):
        text, fraction = text[:-1].strip(), False
    else:
        fraction = "." in text or isinstance(value, float)
    try:
        number = float(text)
    except ValueError:
        return None
    if number != number or number < 0:  # NaN, or below zero
        return None
    if fraction and number <= 1:
        number *= 100
    return min(100, int(number))

"""What a provider is: an asynchronous state machine behind `submit` and `poll`.

Submitting and polling are separate steps so that the upstream id is stored the moment it
is known: a restart polls the task instead of paying upstream for it twice. Providers
know nothing of credits or of our database; the worker turns their answers into task
transitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class Artifact:
    """One result: its bytes with their content type."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class SourceTask:
    """The earlier task that `input.task_id` named, as the provider needs to see it."""

    task_id: str
    model: str
    provider: str
    upstream_id: str | None
    result_urls: list[str]


@dataclass(frozen=True, slots=True)
class Job:
    task_id: str
    model: str
    input: Mapping[str, Any]
    upstream_id: str | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    source: SourceTask | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    upstream_id: str
    poll_after: float
    """Seconds until the first poll is worth making."""
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    poll_after: float


@dataclass(frozen=True, slots=True)
class Succeeded:
    artifacts: list[Artifact]


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


Outcome = Pending | Succeeded | Failed


class ProviderError(Exception):
    """A call that didn't work. `retryable` ones are tried again with backoff until the
    task's deadline; the others fail the task (and refund it) with `message`."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


SourceLoader = Callable[[str], Awaitable[bytes]]
"""Fetches a source image by URL (ours, or a user's) and returns its bytes."""


class Provider(Protocol):
    name: str
    engine: Literal["preview", "ai"]
    models: frozenset[str]

    async def submit(self, job: Job) -> Submitted: ...

    async def poll(self, job: Job) -> Outcome: ...

    async def aclose(self) -> None: ...

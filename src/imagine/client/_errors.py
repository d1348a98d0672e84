"""The SDK's exceptions. Every one is an `ImagineError`:

```
ImagineError                 anything the SDK raises on purpose
├── AuthenticationError      401: missing, unknown or revoked key
├── InsufficientCredits      402: the balance can't cover the model's price
├── NotFound                 404: an unknown task, or another account's
├── Conflict                 409: the task already ended (cancel)
├── InvalidRequest           400, 413, 422, 431: the request can't be accepted
├── RateLimited              429: the key's rate limit; see `retry_after`
├── ServerError              5xx: the server failed or is busy
├── ConnectionFailed         no answer: unreachable, reset, timed out
├── WaitTimeout              a task did not end within the wait's timeout
├── TaskFailed               a task ended FAILED (raised by `run`)
└── ConfigError              a login file that can't be read
```

Errors that come from an answer carry the server's envelope: `status_code` (the HTTP
status), `code` and `message` (as the API document names them), `body` (the raw text),
`envelope` (the parsed JSON, when it was JSON) and `headers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagine.client._models import BaseTask


class ImagineError(Exception):
    """The base of every error the SDK raises.

    ```python
    try:
        client.generate("a cat")
    except imagine.client.ImagineError as exc:
        print(exc.status_code, exc.message)
    ```
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: int | None = None,
        body: str | None = None,
        envelope: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        """The server's `message`, or what went wrong on this side."""
        self.status_code = status_code
        """The HTTP status of the answer; None when no answer came."""
        self.code = code
        """The envelope's `code` (equal to the HTTP status on this server)."""
        self.body = body
        """The answer's body as text."""
        self.envelope = envelope
        """The answer's body parsed, when it was a JSON object."""
        self.headers: Mapping[str, str] = headers or {}
        """The answer's headers."""
        self.attempts = attempts
        """How many times the request was sent before giving up."""

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.status_code}: {self.message}"


class AuthenticationError(ImagineError):
    """401: the API key is missing, unknown or revoked."""


class InsufficientCredits(ImagineError):
    """402: the balance can't cover the model's price."""


class NotFound(ImagineError):
    """404: an unknown task (or another account's), or an unknown path."""


class Conflict(ImagineError):
    """409: the task already ended, so it can't be cancelled."""


class InvalidRequest(ImagineError):
    """400 or 422 (also 413 and 431): the request can't be accepted; the message names
    the field, e.g. `input.prompt: required for grok-imagine/text-to-video`."""


class RateLimited(ImagineError):
    """429: the key's rate limit is reached. `retry_after` is the server's `Retry-After`
    in seconds (None when it sent none)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        """Seconds the server asked to wait (`Retry-After`); None when it gave none."""


class ServerError(ImagineError):
    """5xx: the server failed or is momentarily busy (retried before it is raised)."""


class ConnectionFailed(ImagineError):
    """No answer came: the server is unreachable, the connection was reset, or the
    request timed out (retried before it is raised)."""


class WaitTimeout(ImagineError):
    """A task did not end within the wait's timeout; `task` is its last known state.

    ```python
    try:
        task.wait(timeout=30)
    except WaitTimeout as exc:
        print("still", exc.task.status, exc.task.progress)
    ```
    """

    def __init__(self, message: str, *, task: BaseTask) -> None:
        super().__init__(message)
        self.task = task
        """The task's last known state (still IN_PROGRESS)."""


class TaskFailed(ImagineError):
    """A task ended FAILED; `task` is it and `error_message` says why."""

    def __init__(self, task: BaseTask) -> None:
        reason = task.error_message or "no reason given"
        super().__init__(f"task {task.task_id} failed: {reason}")
        self.task = task
        """The task, as it ended."""
        self.error_message = task.error_message
        """Why it failed (the task's `error_message`)."""


class ConfigError(ImagineError):
    """The login file exists but can't be read as `{"base_url", "api_key"}`."""


_BY_STATUS: dict[int, type[ImagineError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    431: InvalidRequest,
}


def error_class(status_code: int) -> type[ImagineError]:
    """The exception for an error answer of this HTTP status."""
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, ImagineError)

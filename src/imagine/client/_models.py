"""What the SDK answers with: tasks, models, the account's balance."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from imagine.client._client import AsyncClient, Client

TaskStatus = Literal["IN_PROGRESS", "SUCCESS", "FAILED"]
"""A task's status as the API names it."""

IN_PROGRESS: TaskStatus = "IN_PROGRESS"
SUCCESS: TaskStatus = "SUCCESS"
FAILED: TaskStatus = "FAILED"


@dataclass(frozen=True)
class BaseTask:
    """The fields of a task, as `GET /api/status` answers them.

    `consumed_credits` and `created_at` are None only on a task just created by a
    `generate` that did not wait (its answer holds only the id and status); `refresh()`
    reads them.
    """

    task_id: str
    status: TaskStatus
    model: str
    request: Mapping[str, Any]
    """The submitted payload, sanitized by the server."""
    result_urls: tuple[str, ...] = ()
    """The results' URLs (`response.resultUrls`), once the task succeeded."""
    consumed_credits: int | None = None
    """Credits charged for the task (0 once refunded)."""
    error_message: str | None = None
    """Why the task failed, when it did."""
    created_at: datetime | None = None
    completed_at: datetime | None = None
    progress: int | None = None
    """How far an unfinished task has got, 0 to 100, where its provider tells."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The answer's `data` as it came."""

    def __hash__(self) -> int:
        return hash((self.task_id, self.status, self.progress, self.result_urls))

    @property
    def done(self) -> bool:
        """Whether the task has ended (SUCCESS or FAILED)."""
        return self.status != IN_PROGRESS

    @property
    def succeeded(self) -> bool:
        """Whether the task ended with SUCCESS."""
        return self.status == SUCCESS

    @property
    def failed(self) -> bool:
        """Whether the task ended FAILED (by its provider, its deadline or a cancel)."""
        return self.status == FAILED


@dataclass(frozen=True)
class Task(BaseTask):
    """A task of a `Client`; it can wait for itself and download its results.

    ```python
    task = client.generate("a lighthouse at dawn")
    task = task.wait(timeout=120, on_update=lambda t: print(t.status, t.progress))
    paths = task.download("out/")
    ```
    """

    _client: Client | None = field(default=None, repr=False, compare=False, kw_only=True)
    __hash__ = BaseTask.__hash__

    @property
    def client(self) -> Client:
        """The client that made this task; its methods go through it."""
        if self._client is None:
            raise RuntimeError("this task is not bound to a client")
        return self._client

    def refresh(self) -> Task:
        """The task's current state (one status call)."""
        return self.client.status(self.task_id)

    def wait(
        self, timeout: float | None = None, on_update: Callable[[Task], object] | None = None
    ) -> Task:
        """Poll until the task ends and return it; see `Client.wait`."""
        return self.client.wait(self, timeout=timeout, on_update=on_update)

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Save every result into `directory`; see `Client.download`."""
        return self.client.download(self, directory)

    def cancel(self) -> Task:
        """Cancel the task; see `Client.cancel`."""
        return self.client.cancel(self.task_id)


@dataclass(frozen=True)
class AsyncTask(BaseTask):
    """A task of an `AsyncClient`: `Task` with coroutine methods.

    ```python
    task = await client.generate("a lighthouse at dawn")
    task = await task.wait(timeout=120)
    paths = await task.download("out/")
    ```
    """

    _client: AsyncClient | None = field(default=None, repr=False, compare=False, kw_only=True)
    __hash__ = BaseTask.__hash__

    @property
    def client(self) -> AsyncClient:
        """The client that made this task; its methods go through it."""
        if self._client is None:
            raise RuntimeError("this task is not bound to a client")
        return self._client

    async def refresh(self) -> AsyncTask:
        """The task's current state (one status call)."""
        return await self.client.status(self.task_id)

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the task
        on_update: Callable[[AsyncTask], object | Awaitable[object]] | None = None,
    ) -> AsyncTask:
        """Poll until the task ends and return it; see `AsyncClient.wait`."""
        return await self.client.wait(self, timeout=timeout, on_update=on_update)

    async def download(self, directory: str | Path = ".") -> list[Path]:
        """Save every result into `directory`; see `AsyncClient.download`."""
        return await self.client.download(self, directory)

    async def cancel(self) -> AsyncTask:
        """Cancel the task; see `AsyncClient.cancel`."""
        return await self.client.cancel(self.task_id)


@dataclass(frozen=True)
class Model:
    """A model as `GET /api/models` lists it.

    ```python
    for model in client.models():
        print(model.name, model.credits, model.engine)
    ```
    """

    name: str
    credits: int
    output: str
    """`image` or `video`."""
    inputs: tuple[str, ...] = ()
    """The inputs it requires, e.g. `("input.prompt",)`."""
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Optional inputs and the values each accepts."""
    available: bool = True
    """Whether a configured provider serves it."""
    provider: str | None = None
    routes: tuple[str, ...] = ()
    """The providers tried, in failover order."""
    engine: str | None = None
    """`preview` (offline placeholder files) or `ai`."""
    description: str = ""

    def __hash__(self) -> int:
        return hash((self.name, self.credits, self.available, self.provider))


@dataclass(frozen=True)
class Account:
    """The caller's account and its credit balance (`GET /api/credits`)."""

    account_id: str
    balance: int


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def task_fields(data: Mapping[str, Any], sent: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fields of a task from a status answer's `data`. `sent` is the body of the
    generate that made it, for an answer that holds only `task_id` and `status`."""
    request = data.get("request")
    if not isinstance(request, Mapping):
        request = dict(sent or {})
    response = data.get("response")
    urls = _strings(response.get("resultUrls")) if isinstance(response, Mapping) else ()
    model = request.get("model") if isinstance(request.get("model"), str) else None
    error_message = data.get("error_message")
    return {
        "task_id": str(data["task_id"]),
        "status": cast(TaskStatus, str(data["status"])),
        "model": model or "",
        "request": request,
        "result_urls": urls,
        "consumed_credits": _int(data.get("consumed_credits")),
        "error_message": error_message if isinstance(error_message, str) else None,
        "created_at": _datetime(data.get("created_at")),
        "completed_at": _datetime(data.get("completed_at")),
        "progress": _int(data.get("progress")),
        "raw": dict(data),
    }


def parse_model(data: Mapping[str, Any]) -> Model:
    options = data.get("options")
    return Model(
        name=str(data["model"]),
        credits=int(data["credits"]),
        output=str(data.get("output", "")),
        inputs=_strings(data.get("inputs")),
        options=(
            {str(name): _strings(values) for name, values in options.items()}
            if isinstance(options, Mapping)
            else {}
        ),
        available=bool(data.get("available", True)),
        provider=data.get("provider") if isinstance(data.get("provider"), str) else None,
        routes=_strings(data.get("routes")),
        engine=data.get("engine") if isinstance(data.get("engine"), str) else None,
        description=str(data.get("description") or ""),
    )


def parse_account(data: Mapping[str, Any]) -> Account:
    return Account(account_id=str(data["account_id"]), balance=int(data["balance"]))

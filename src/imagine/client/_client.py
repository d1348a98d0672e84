"""`Client` and `AsyncClient`: the same operations (see `_core`), performed with blocking
calls or with awaits."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from imagine.client import config
from imagine.client._core import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    Core,
    Emit,
    Flow,
    Notify,
    PartFile,
    Request,
    RetryPolicy,
    Sleep,
    Step,
    Stream,
    generate_body,
    request_timeout,
)
from imagine.client._models import Account, AsyncTask, Model, Task, task_fields

R = TypeVar("R")
T = TypeVar("T")


def _timeout(
    timeout: float | httpx.Timeout | None, http_client: httpx.Client | httpx.AsyncClient | None
) -> httpx.Timeout:
    if http_client is not None:
        return http_client.timeout
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def _params(request: Request) -> dict[str, str | int] | None:
    return dict(request.params) if request.params is not None else None


class Client:
    """A client of an imagine server (blocking).

    Configured by its arguments, else by `IMAGINE_API_KEY` / `IMAGINE_BASE_URL`, else by
    the login file (`imagine.client.config.login_path()`); the default server is
    `http://127.0.0.1:8000`. Transient failures (429, 5xx, resets, timeouts) are retried
    up to `max_retries` times with backoff. `timeout` is per request, in seconds.

    ```python
    from imagine.client import Client

    with Client(api_key="im_...", base_url="http://127.0.0.1:8000") as client:
        task = client.run("A majestic dragon over a neon city")
        print(task.result_urls, client.balance())
    ```

    Pass `transport=` (an `httpx.BaseTransport`) or a whole `http_client=` to control
    the HTTP layer; a given `http_client` is not closed by `close()`, and its own
    timeout is used.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        if transport is not None and http_client is not None:
            raise ValueError("give transport or http_client, not both")
        resolved_url, resolved_key = config.resolve(base_url, api_key)
        self._core = Core[Task](
            resolved_url, resolved_key, RetryPolicy(max_retries=max_retries), self._task
        )
        self._timeout = _timeout(timeout, http_client)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=self._timeout)

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._core.base_url

    def _task(self, data: Mapping[str, Any], sent: Mapping[str, Any] | None) -> Task:
        return Task(**task_fields(data, sent), _client=self)

    # Performing the steps of the flows.

    def _send(self, request: Request) -> httpx.Response | httpx.HTTPError:
        options: dict[str, Any] = {
            "params": _params(request),
            "json": request.json,
            "headers": dict(request.headers),
            "timeout": request_timeout(self._timeout, request.extra_read),
            "follow_redirects": request.follow_redirects,
        }
        try:
            if request.stream_to is None:
                return self._http.request(request.method, request.url, **options)
            with self._http.stream(request.method, request.url, **options) as response:
                if response.status_code >= 400:
                    response.read()
                    return response
                part = PartFile(request.stream_to)
                try:
                    for chunk in response.iter_bytes():
                        part.write(chunk)
                except BaseException:
                    part.discard()
                    raise
                part.commit()
                return response
        except httpx.HTTPError as exc:
            return exc

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Request):
            return self._send(step)
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
        elif isinstance(step, Notify):
            step.callback(step.task)
        return None

    def _run(self, flow: Flow[R]) -> R:
        sent: Any = None
        while True:
            try:
                step = flow.send(sent)
            except StopIteration as stop:
                result: R = stop.value
                return result
            sent = self._perform(step)

    def _iterate(self, stream: Stream[T]) -> Iterator[T]:
        sent: Any = None
        while True:
            try:
                step = stream.send(sent)
            except StopIteration:
                return
            if isinstance(step, Emit):
                sent = None
                yield step.item
            else:
                sent = self._perform(step)

    # The API.

    def generate(
        self,
        prompt: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        image_urls: str | Sequence[str] | None = None,
        task_id: str | None = None,
        callback_url: str | None = None,
        public: bool = False,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Task:
        """Create a task (POST /api/generate) and return it; it is charged at once.

        `model` is a full name (`grok-imagine/text-to-video`) or its last part
        (`text-to-video`). `options` go into `input` beside the prompt: `aspect_ratio`,
        `mode`, `duration`, `resolution`, `index` (see `models()`). Each call sends an
        `Idempotency-Key` (a fresh UUID unless you give one), so a retry after a lost
        answer gets the same task back and is not charged twice. With `wait=True` the
        finished task is returned (`WaitTimeout` after `timeout` seconds; None: no limit).

        ```python
        task = client.generate("waves at dusk", model="text-to-video",
                               options={"aspect_ratio": "16:9", "duration": "6"})
        upscaled = client.generate(model="upscale", task_id=task.task_id, wait=True)
        ```
        """
        body = generate_body(
            prompt,
            model=model,
            image_urls=image_urls,
            task_id=task_id,
            callback_url=callback_url,
            public=public,
            options=options,
        )
        return self._run(
            self._core.generate(body, idempotency_key=idempotency_key, wait=wait, timeout=timeout)
        )

    def run(
        self,
        prompt: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        image_urls: str | Sequence[str] | None = None,
        task_id: str | None = None,
        callback_url: str | None = None,
        public: bool = False,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Task:
        """Generate, wait for the task to end and return it; raises `TaskFailed` if it
        ended FAILED and `WaitTimeout` after `timeout` seconds.

        ```python
        task = client.run("a red fox in snow", options={"aspect_ratio": "3:2"})
        task.download("out/")
        ```
        """
        body = generate_body(
            prompt,
            model=model,
            image_urls=image_urls,
            task_id=task_id,
            callback_url=callback_url,
            public=public,
            options=options,
        )
        generated = self._core.generate(
            body, idempotency_key=idempotency_key, wait=True, timeout=timeout
        )
        return self._run(self._core.run(generated))

    def status(self, task_id: str) -> Task:
        """The task's latest record (GET /api/status).

        ```python
        task = client.status("t3f0c...")
        print(task.status, task.progress, task.result_urls)
        ```
        """
        return self._run(self._core.status(task_id))

    def wait(
        self,
        task: Task | str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Task], object] | None = None,
    ) -> Task:
        """Poll a task until it ends and return it (SUCCESS or FAILED; no exception for
        FAILED). Pauses grow from 0.25 s to 5 s, a `Retry-After` is honoured, and polls
        ask the server to hold the answer (`Prefer: wait`) where it can. `on_update` is
        called with each new state. Raises `WaitTimeout` after `timeout` seconds.

        ```python
        done = client.wait(task, timeout=300, on_update=lambda t: print(t.progress))
        ```
        """
        return self._run(self._core.wait(task, timeout=timeout, on_update=on_update))

    def download(self, task: Task | str, directory: str | Path = ".") -> list[Path]:
        """Save every result of a finished task into `directory` (made if missing), as
        `<task_id>-<index><extension>`, streamed; returns the paths. Raises `TaskFailed`
        for a failed task.

        ```python
        paths = client.download(task, "out/")   # [PosixPath('out/t3f0c...-0.png')]
        ```
        """
        found = self.status(task) if isinstance(task, str) else task
        return self._run(self._core.download(found, Path(directory)))

    def tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[Task]:
        """Your tasks, newest first (GET /api/tasks), following the server's cursor page
        after page as you iterate. `status` and `model` filter; `limit` stops after that
        many; `page_size` is the tasks per request (1 to 100; default 100).

        ```python
        for task in client.tasks(status="SUCCESS", limit=50):
            print(task.task_id, task.created_at)
        ```
        """
        return self._iterate(
            self._core.tasks(status=status, model=model, limit=limit, page_size=page_size)
        )

    def balance(self) -> int:
        """The account's credit balance (GET /api/credits)."""
        return self.account().balance

    def account(self) -> Account:
        """The account's id and credit balance (GET /api/credits)."""
        return self._run(self._core.account())

    def models(self) -> list[Model]:
        """Every model with its price, inputs, options and engine (GET /api/models)."""
        return self._run(self._core.models())

    def cancel(self, task_id: str) -> Task:
        """Cancel an unfinished task (POST /api/cancel) and return it, now FAILED.
        Credits come back unless an AI provider had started it. Raises `Conflict` if it
        had already ended.

        ```python
        task = client.cancel(task.task_id)
        print(task.error_message)   # cancelled by its owner
        ```
        """
        return self._run(self._core.cancel(task_id))

    def close(self) -> None:
        """Close the connections (not those of an `http_client` you gave)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """A client of an imagine server for asyncio: `Client` with coroutine methods.

    ```python
    from imagine.client import AsyncClient

    async with AsyncClient() as client:
        task = await client.generate("a lighthouse at dawn", wait=True)
        async for old in client.tasks(limit=10):
            print(old.task_id, old.status)
    ```
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if transport is not None and http_client is not None:
            raise ValueError("give transport or http_client, not both")
        resolved_url, resolved_key = config.resolve(base_url, api_key)
        self._core = Core[AsyncTask](
            resolved_url, resolved_key, RetryPolicy(max_retries=max_retries), self._task
        )
        self._timeout = _timeout(timeout, http_client)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=self._timeout)

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._core.base_url

    def _task(self, data: Mapping[str, Any], sent: Mapping[str, Any] | None) -> AsyncTask:
        return AsyncTask(**task_fields(data, sent), _client=self)

    async def _send(self, request: Request) -> httpx.Response | httpx.HTTPError:
        options: dict[str, Any] = {
            "params": _params(request),
            "json": request.json,
            "headers": dict(request.headers),
            "timeout": request_timeout(self._timeout, request.extra_read),
            "follow_redirects": request.follow_redirects,
        }
        try:
            if request.stream_to is None:
                return await self._http.request(request.method, request.url, **options)
            async with self._http.stream(request.method, request.url, **options) as response:
                if response.status_code >= 400:
                    await response.aread()
                    return response
                part = PartFile(request.stream_to)
                try:
                    async for chunk in response.aiter_bytes():
                        part.write(chunk)
                except BaseException:
                    part.discard()
                    raise
                part.commit()
                return response
        except httpx.HTTPError as exc:
            return exc

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Request):
            return await self._send(step)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Notify):
            answered = step.callback(step.task)
            if inspect.isawaitable(answered):
                await answered
        return None

    async def _run(self, flow: Flow[R]) -> R:
        sent: Any = None
        while True:
            try:
                step = flow.send(sent)
            except StopIteration as stop:
                result: R = stop.value
                return result
            sent = await self._perform(step)

    async def _iterate(self, stream: Stream[T]) -> AsyncIterator[T]:
        sent: Any = None
        while True:
            try:
                step = stream.send(sent)
            except StopIteration:
                return
            if isinstance(step, Emit):
                sent = None
                yield step.item
            else:
                sent = await self._perform(step)

    async def generate(
        self,
        prompt: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        image_urls: str | Sequence[str] | None = None,
        task_id: str | None = None,
        callback_url: str | None = None,
        public: bool = False,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the task
    ) -> AsyncTask:
        """Create a task; see `Client.generate`.

        ```python
        task = await client.generate("waves at dusk", model="text-to-video")
        ```
        """
        body = generate_body(
            prompt,
            model=model,
            image_urls=image_urls,
            task_id=task_id,
            callback_url=callback_url,
            public=public,
            options=options,
        )
        return await self._run(
            self._core.generate(body, idempotency_key=idempotency_key, wait=wait, timeout=timeout)
        )

    async def run(
        self,
        prompt: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        image_urls: str | Sequence[str] | None = None,
        task_id: str | None = None,
        callback_url: str | None = None,
        public: bool = False,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the task
    ) -> AsyncTask:
        """Generate and wait for the finished task; see `Client.run`.

        ```python
        task = await client.run("a red fox in snow")
        ```
        """
        body = generate_body(
            prompt,
            model=model,
            image_urls=image_urls,
            task_id=task_id,
            callback_url=callback_url,
            public=public,
            options=options,
        )
        generated = self._core.generate(
            body, idempotency_key=idempotency_key, wait=True, timeout=timeout
        )
        return await self._run(self._core.run(generated))

    async def status(self, task_id: str) -> AsyncTask:
        """The task's latest record; see `Client.status`."""
        return await self._run(self._core.status(task_id))

    async def wait(
        self,
        task: AsyncTask | str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the task
        on_update: Callable[[AsyncTask], object | Awaitable[object]] | None = None,
    ) -> AsyncTask:
        """Poll a task until it ends; see `Client.wait`. `on_update` may be a coroutine
        function."""
        return await self._run(self._core.wait(task, timeout=timeout, on_update=on_update))

    async def download(self, task: AsyncTask | str, directory: str | Path = ".") -> list[Path]:
        """Save every result of a finished task; see `Client.download`."""
        found = await self.status(task) if isinstance(task, str) else task
        return await self._run(self._core.download(found, Path(directory)))

    def tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[AsyncTask]:
        """Your tasks, newest first, as an async iterator; see `Client.tasks`.

        ```python
        async for task in client.tasks(status="FAILED"):
            print(task.task_id, task.error_message)
        ```
        """
        return self._iterate(
            self._core.tasks(status=status, model=model, limit=limit, page_size=page_size)
        )

    async def balance(self) -> int:
        """The account's credit balance."""
        return (await self.account()).balance

    async def account(self) -> Account:
        """The account's id and credit balance."""
        return await self._run(self._core.account())

    async def models(self) -> list[Model]:
        """Every model with its price, inputs, options and engine."""
        return await self._run(self._core.models())

    async def cancel(self, task_id: str) -> AsyncTask:
        """Cancel an unfinished task; see `Client.cancel`."""
        return await self._run(self._core.cancel(task_id))

    async def aclose(self) -> None:
        """Close the connections (not those of an `http_client` you gave)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

"""What the fake upstream servers share: a real uvicorn server on a loopback port in a
background thread, scripted answers, call counters, and real result files to download.

The fakes are test tools that speak the providers' documented protocols; they are not
providers and contain nothing of ours.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import av
import orjson
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Answer:
    """A scripted answer for the next call of one operation."""

    status: int = 200
    code: int | None = None
    """kie's body code (default: the HTTP status)."""
    message: str = "scripted failure"
    retry_after: float | None = None
    raw: bytes | None = None
    """A body sent as is (malformed answers)."""
    delay: float = 0.0
    """Seconds to wait before answering (a timeout, when longer than the client's)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def png(color: str = "teal", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4(frames: int = 6, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=6)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            image = Image.new("RGB", size, (40 * index % 255, 90, 160))
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class FakeUpstream:
    """Base of the fakes. Knobs are plain attributes, safe to change while it runs."""

    api_key = "test-upstream-key"

    def __init__(self, *, task_seconds: float = 0.3, latency: float = 0.0) -> None:
        self.task_seconds = task_seconds
        """How long a task takes upstream."""
        self.latency = latency
        """Seconds added before every API answer."""
        self.scripts: dict[str, deque[Answer]] = {}
        self.calls: Counter[str] = Counter()
        self.call_times: dict[str, list[float]] = {}
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        """The most calls of one operation answered at the same time (with `latency`)."""
        self.polls_by_task: Counter[str] = Counter()
        self.result_files: dict[str, tuple[bytes, str]] = {}
        self.result_downloads = 0
        self.result_failures = 0
        """The next this-many result downloads answer 503."""
        self.result_override: bytes | None = None
        """Serve these bytes (as image/png) instead of every real result."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._png = png()
        self._mp4 = mp4()

    # -- scripting -------------------------------------------------------------------

    def script(self, operation: str, *answers: Answer) -> None:
        """Queue answers for the next calls of `operation` (then normal answers resume)."""
        self.scripts.setdefault(operation, deque()).extend(answers)

    async def scripted(self, operation: str) -> Response | None:
        """Count the call; answer with the next scripted answer, if any."""
        self.calls[operation] += 1
        self.call_times.setdefault(operation, []).append(time.monotonic())
        if self.latency:
            self.in_flight[operation] += 1
            self.most_in_flight[operation] = max(
                self.most_in_flight[operation], self.in_flight[operation]
            )
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.in_flight[operation] -= 1
        queue = self.scripts.get(operation)
        if not queue:
            return None
        answer = queue.popleft()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = {} if answer.retry_after is None else {"Retry-After": f"{answer.retry_after:g}"}
        if answer.raw is not None:
            return Response(answer.raw, answer.status, headers, media_type="application/json")
        return self.error_response(answer, headers)

    def error_response(self, answer: Answer, headers: dict[str, str]) -> Response:
        raise NotImplementedError

    def unauthorized(self, operation: str) -> Response:
        """The provider's answer to a wrong API key."""
        raise NotImplementedError

    async def admit(self, operation: str, request: Request) -> Response | None:
        """What every endpoint does first: count the call, then answer with the next
        scripted answer or refuse a wrong key. None: go on and serve the request."""
        scripted = await self.scripted(operation)
        if scripted is not None:
            return scripted
        return None if self.authorized(request) else self.unauthorized(operation)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    # -- results -----------------------------------------------------------------------

    def add_result(self, name: str, video: bool) -> str:
        self.result_files[name] = (self._mp4, "video/mp4") if video else (self._png, "image/png")
        return f"{self.url}/results/{name}"

    async def _result(self, request: Request) -> Response:
        found = self.result_files.get(request.path_params["name"])
        if found is None:
            return Response(b"no such file", 404)
        self.result_downloads += 1
        if self.result_failures > 0:
            self.result_failures -= 1
            return Response(b"busy", 503)
        if self.result_override is not None:
            return Response(self.result_override, 200, media_type="image/png")
        return Response(found[0], 200, media_type=found[1])

    # -- running -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def app(self) -> Starlette:
        return Starlette(
            routes=[*self.routes(), Route("/results/{name}", self._result, methods=["GET"])]
        )

    def start(self) -> Self:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.02)
        return self

    def _run(self) -> None:
        assert self._server is not None

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            assert self._server is not None
            try:
                await self._server.serve()
            finally:
                await self.shutdown()

        asyncio.run(serve())

    async def shutdown(self) -> None:
        """Close what the fake opened itself (runs on its own loop)."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

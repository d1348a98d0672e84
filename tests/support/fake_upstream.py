"""What the fake upstream servers share: a real uvicorn server on a loopback port in a
background thread, scripted answers, call counters, and real result files to download.

The fakes are test tools that speak the providers' documented protocols; they are not
providers and contain nothing of ours.
"""

from __future__ import annotations

import asyncio
import io
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any, Self

import av
import orjson
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.support.running import Running

TASK_FAULTS = ("stuck", "fail", "no_results", "missing_result", "trickle")
"""What can be wrong with a task made upstream (`FakeUpstream.task_faults`): it never
finishes, it ends in the provider's failed state, it succeeds without any result URL, its
result URL answers 404, or its result trickles (one byte every `trickle_seconds`)."""


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
    reset: bool = False
    """Reset the connection (TCP RST) instead of answering."""


@dataclass(frozen=True)
class Fault:
    """An answer a random share of one operation's calls get (`FakeUpstream.faults`)."""

    kind: str
    """Its name in `faults_injected`."""
    share: float
    """The chance that a call gets it (0 to 1)."""
    answer: Answer


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


def _target(request: Request) -> str:
    """A request's method, path and query: `GET /v1/videos/abc`."""
    query = request.url.query
    return f"{request.method} {request.url.path}" + (f"?{query}" if query else "")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class FakeUpstream(Running):
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
        self.faults: dict[str, list[Fault]] = {}
        """Per operation, answers that a random share of its calls get once no scripted
        answer is left."""
        self.task_faults: dict[str, float] = {}
        """Per kind of TASK_FAULTS, the share of new upstream tasks given it (kinds a fake
        can't give a task are passed over)."""
        self.next_task_faults: deque[str] = deque()
        """Faults for the next created tasks that can have them, before `task_faults`
        shares apply."""
        self.faults_injected: Counter[str] = Counter()
        """Faults met, as "operation:kind" for calls and "task:kind" for tasks."""
        self.task_log: list[tuple[float, str, str | None]] = []
        """(time.monotonic(), prompt, fault) of every task made upstream, in order."""
        self.random = random.Random(0)
        """Draws the random faults; seed it for a repeatable draw."""
        self.trickle_seconds = 2.0
        """Seconds between the bytes of a trickling result."""
        self.trickling: set[str] = set()
        """Names of results served one byte at a time."""
        self.resets: list[tuple[float, str]] = []
        """(time.monotonic(), method, path and query) of every call whose connection was
        reset."""
        self.call_log: list[tuple[float, str, str]] = []
        """(time.monotonic(), operation, method path and query) of every call, in order."""
        self._transports: dict[Any, asyncio.Transport] = {}
        self._stopping = False
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

    async def scripted(self, operation: str, request: Request | None = None) -> Response | None:
        """Count the call; answer with the next scripted answer, if any, else with a random
        fault, if one is drawn (`request`: the call, whose connection a reset resets)."""
        self.calls[operation] += 1
        self.call_times.setdefault(operation, []).append(time.monotonic())
        if request is not None:
            self.call_log.append((self.call_times[operation][-1], operation, _target(request)))
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
        if queue:
            answer = queue.popleft()
        else:
            drawn = self._draw(operation)
            if drawn is None:
                return None
            answer = drawn
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.reset:
            assert request is not None, "a reset needs the request"
            return await self._reset(request)
        headers = {} if answer.retry_after is None else {"Retry-After": f"{answer.retry_after:g}"}
        if answer.raw is not None:
            return Response(answer.raw, answer.status, headers, media_type="application/json")
        return self.error_response(answer, headers)

    def _draw(self, operation: str) -> Answer | None:
        roll = self.random.random()
        for fault in self.faults.get(operation, ()):
            if roll < fault.share:
                self.faults_injected[f"{operation}:{fault.kind}"] += 1
                return fault.answer
            roll -= fault.share
        return None

    def draw_task_fault(self, kinds: Collection[str] = TASK_FAULTS) -> str | None:
        """The fault of a task being made upstream (None: it runs normally); `kinds` are
        those this kind of task can have."""
        fault: str | None = None
        planned = [kind for kind in self.next_task_faults if kind in kinds]
        if planned:
            fault = planned[0]
            self.next_task_faults.remove(fault)
        else:
            roll = self.random.random()
            for kind, share in self.task_faults.items():
                if kind not in kinds:
                    continue
                if roll < share:
                    fault = kind
                    break
                roll -= share
        if fault is not None:
            self.faults_injected[f"task:{fault}"] += 1
        return fault

    async def _reset(self, request: Request) -> Response:
        """Reset the call's connection (SO_LINGER 0, then abort: the peer reads RST)."""
        self.resets.append((time.monotonic(), _target(request)))
        transport = self._transports.get(request.scope.get("client"))
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # Let the server see the connection lost, so that nothing is written on it.
        for _ in range(3):
            await asyncio.sleep(0)
        return Response(b"", 500)

    def error_response(self, answer: Answer, headers: dict[str, str]) -> Response:
        raise NotImplementedError

    def unauthorized(self, operation: str) -> Response:
        """The provider's answer to a wrong API key."""
        raise NotImplementedError

    async def admit(self, operation: str, request: Request) -> Response | None:
        """What every endpoint does first: count the call, then answer with the next
        scripted answer or refuse a wrong key. None: go on and serve the request."""
        scripted = await self.scripted(operation, request)
        if scripted is not None:
            return scripted
        return None if self.authorized(request) else self.unauthorized(operation)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    # -- results -----------------------------------------------------------------------

    def add_result(self, name: str, video: bool, fault: str | None = None) -> str:
        """A result file and its URL; with the task's fault "missing_result" the URL
        answers 404, with "trickle" the file comes one byte every `trickle_seconds`."""
        if fault != "missing_result":
            data = (self._mp4, "video/mp4") if video else (self._png, "image/png")
            self.result_files[name] = data
        if fault == "trickle":
            self.trickling.add(name)
        return f"{self.url}/results/{name}"

    def log_task(self, prompt: Any, fault: str | None) -> None:
        self.task_log.append((time.monotonic(), str(prompt), fault))

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
        if request.path_params["name"] in self.trickling:
            return StreamingResponse(self._trickle(request, found[0]), media_type=found[1])
        return Response(found[0], 200, media_type=found[1])

    async def _trickle(self, request: Request, data: bytes) -> AsyncIterator[bytes]:
        for index in range(len(data)):
            if self._stopping or await request.is_disconnected():
                return
            yield data[index : index + 1]
            await asyncio.sleep(self.trickle_seconds)

    # -- running -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def app(self) -> Starlette:
        return Starlette(
            routes=[*self.routes(), Route("/results/{name}", self._result, methods=["GET"])]
        )

    def _protocol(self) -> type[asyncio.Protocol]:
        """uvicorn's HTTP protocol, keeping each connection's transport (for resets)."""
        transports = self._transports

        class Recording(HttpToolsProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                transports[transport.get_extra_info("peername")] = transport
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                peer = self.transport.get_extra_info("peername")
                if transports.get(peer) is self.transport:
                    del transports[peer]
                super().connection_lost(exc)

        return Recording

    def start(self) -> Self:
        config = uvicorn.Config(
            self.app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            http=self._protocol(),
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
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

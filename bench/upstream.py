"""Upstream cost and finish latency of 10,000 tasks in flight against the fake kie.ai.

    .venv/bin/python -m bench.upstream [--tasks 10000] [--latency 30] [--out result.json]
    .venv/bin/python -m bench.upstream --quick          # 300 tasks, 5 s upstream latency
    .venv/bin/python -m bench.upstream --modes signed,unsigned,polling --concurrency 64

One invocation makes one run per mode, each with a fresh data dir and a fresh fake:
`signed` (kie callbacks, signed with a webhook key on both sides: IMAGINE_PUBLIC_URL and
IMAGINE_KIE_WEBHOOK_KEY set), `unsigned` (callbacks without a webhook key, which the server
confirms with one poll) and `polling` (no callbacks: the worker polls kie on its backoff
schedule); the default is signed then polling. Each run starts one `imagine serve` process
(API and worker in the same process) pinned to CPU core 0, and the fake kie.ai
(tests/support/fake_kie.py) in a process of its own on the other cores, so that the
server's memory is its own. It creates all tasks through POST /api/generate as fast as the
server takes them, so that they are in flight upstream together, then waits until every
task has ended. It measures:

- upstream calls per finished task, counted by the fake: createTask and recordInfo;
- the server's peak RSS (VmHWM of /proc/<pid>/status), and VmRSS once a second;
- the time from the upstream finishing (the fake's `ready` time) to the task showing
  SUCCESS: for every task from the database (`finished_at` minus `ready`), and for a
  sample of tasks as a client sees it, by polling GET /api/status from the task's `ready`
  time (at 20 Hz for 2 s, then once a second). A status call on a task in progress may
  poll kie once (the inline refresh), so upstream polls are reported for watched and
  unwatched tasks separately.

The server's kie call budgets are raised out of the way (IMAGINE_KIE_POLL_RATE and
IMAGINE_KIE_CREATE_RATE = 100000/1s; the defaults are kie's account limits, 10/1s and
20/10s, which would make 10,000 tasks take hours) and IMAGINE_WORKER_CONCURRENCY is 512.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import multiprocessing
import os
import platform
import random
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.support.fake_kie import FakeKie, KieTask

from bench.api import (
    BenchError,
    cpu_model,
    free_port,
    imagine,
    log_tail,
    process_cpu_seconds,
    stop,
    write_results,
)

MODEL = "grok-imagine/text-to-image"
PROMPT = "A majestic dragon flying over a neon-lit cyberpunk city"
CREDITS = 10**12
SERVER_CORE = 0
UNLIMITED_RATE = "100000/1s"
SERVER_START_TIMEOUT = 60.0
WATCH_HZ = 20.0
WATCH_FAST_SECONDS = 2.0
"""Watched tasks are asked about at WATCH_HZ for this long after they are ready, then once
a second: every status call on a task in progress costs the server a write (the inline
refresh's claim), so a fast watch of many late tasks would slow down what it measures."""
PROGRESS_EVERY = 5.0

# kie's polling guidance as src/imagine/providers/kie.py (_next_poll) applies it:
# (age below which the rule holds, shortest gap, longest gap) after createTask.
POLL_RULES = ((30.0, 2.0, 3.0), (120.0, 5.0, 10.0), (math.inf, 15.0, 30.0))
CALLBACK_FALLBACK_POLL = 45.0
"""With callbacks, the first poll only checks for a lost callback, 45 s after create."""

MODES = ("signed", "unsigned", "polling")
TARGET_CREATES = 1
TARGET_POLLS_WITH_CALLBACKS = 1
TARGET_RSS_MB = 300.0
TARGET_P99_S = 1.0

DESCRIPTION = "Upstream calls, peak RSS and finish latency of many tasks against the fake kie."

# Wide enough for the report table when the output goes to a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=120)


# ---------------------------------------------------------------------------- HTTP


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams, for the request floods.

    httpx costs about a millisecond of CPU per request and its pool slows down further with
    thousands of queued requests: as the load generator or the fake's callback sender it
    would be the bottleneck, not the server. This one costs a small fraction of that and
    waits for a free connection in FIFO order. It speaks only what the benchmark needs:
    Content-Length or chunked answers, keep-alive, one retry when a reused idle connection
    turns out closed (uvicorn closes idle ones after 5 s) before any answer came.
    """

    IDLE = 3.0
    """Seconds after which an idle connection is not reused."""

    def __init__(self, base_url: str, connections: int, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._host_header = f"{self._host}:{self._port}".encode()
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._timeout = timeout

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request; `target` is the path and query."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            method.encode(),
            target.encode(),
            self._host_header,
            len(body),
        )
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n".encode("latin-1")
        message = head + b"\r\n" + body
        async with self._slots:
            for _ in range(2):
                reader, writer, reused = await self._connection()
                try:
                    async with asyncio.timeout(self._timeout):
                        writer.write(message)
                        await writer.drain()
                        status, content, keep = await _answer(reader)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    writer.close()
                    nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or not (
                        exc.partial
                    )
                    if reused and nothing_read:
                        continue  # the server had closed the idle connection: once more
                    raise
                except BaseException:
                    writer.close()
                    raise
                if keep:
                    self._idle.append((reader, writer, time.monotonic()))
                else:
                    writer.close()
                return status, content
        raise ConnectionError("the connection closed twice before an answer")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < self.IDLE and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return reader, writer, False

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, of one HTTP/1.1 answer."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    keep = fields.get("connection", "").lower() != "close"
    if fields.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        return status, b"".join(chunk[:-2] for chunk in chunks), keep
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"])), keep
    return status, await reader.read(), False


# ---------------------------------------------------------------------------- the fake


class BenchKie(FakeKie):
    """The fake kie.ai plus two read-only endpoints for the benchmark's counters, and the
    times at which it sent each callback and had it answered."""

    CALLBACK_CONNECTIONS = 100
    """As many as the fake's own httpx client would open (httpx's default limit)."""

    def __init__(self, *, task_seconds: float, callbacks: bool, webhook_key: str | None) -> None:
        super().__init__(task_seconds=task_seconds, callbacks=callbacks, webhook_key=webhook_key)
        self.deliveries: dict[str, tuple[float, float]] = {}
        self.callback_states: dict[str, str] = {}
        self._senders: dict[str, RawHttp] = {}

    def routes(self) -> list[Route]:
        return [
            *super().routes(),
            Route("/bench/stats", self._stats, methods=["GET"]),
            Route("/bench/tasks", self._task_facts, methods=["POST"]),
        ]

    async def _stats(self, request: Request) -> Response:
        return _json(
            {
                "calls": dict(self.calls),
                "tasks": len(self.tasks),
                "callbacks": dict(Counter(str(status) for _, status in self.callbacks_sent)),
                "result_downloads": self.result_downloads,
            }
        )

    async def _task_facts(self, request: Request) -> Response:
        """Facts of the upstream tasks named in the body's `ids`, or of all when it is null."""
        wanted = orjson.loads(await request.body()).get("ids")
        ids = list(self.tasks) if wanted is None else [str(name) for name in wanted]
        facts: dict[str, dict[str, Any]] = {}
        for upstream_id in ids:
            task = self.tasks.get(upstream_id)
            if task is None:
                continue
            delivered = self.deliveries.get(upstream_id)
            facts[upstream_id] = {
                "created": task.created,
                "ready": task.ready,
                "polls": self.polls_by_task[upstream_id],
                "prompt": task.input.get("prompt"),
                "callback_status": task.callback_status,
                "callback_sent": delivered[0] if delivered else None,
                "callback_answered": delivered[1] if delivered else None,
                "callback_state": self.callback_states.get(upstream_id),
            }
        return _json(facts)

    async def deliver(self, task: KieTask, body: bytes, headers: dict[str, str]) -> None:
        """As FakeKie.deliver (same request, same bookkeeping), sent with RawHttp: with
        httpx, thousands of callbacks due within seconds saturate the fake's CPU."""
        assert task.callback_url is not None
        parts = urlsplit(task.callback_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        sender = self._senders.get(origin)
        if sender is None:
            sender = self._senders[origin] = RawHttp(origin, self.CALLBACK_CONNECTIONS, 15)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.callback_states[task.id] = str(orjson.loads(body)["data"].get("state"))
        sent = time.time()
        try:
            status, _ = await sender.request("POST", target, body, headers)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            status = 0
        task.callback_status = status
        self.callbacks_sent.append((task.id, status))
        self.deliveries[task.id] = (sent, time.time())

    async def shutdown(self) -> None:
        for sender in self._senders.values():
            sender.close()
        await super().shutdown()


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), 200, media_type="application/json")


def serve_fake(
    conn: Connection, latency: float, callbacks: bool, webhook_key: str | None, cores: list[int]
) -> None:
    """The fake's process: serve until the parent says stop or goes away."""
    if cores:
        os.sched_setaffinity(0, cores)
    # Ctrl-C reaches the whole process group; the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with BenchKie(task_seconds=latency, callbacks=callbacks, webhook_key=webhook_key) as fake:
        conn.send(fake.url)
        with suppress(EOFError):
            conn.recv()


@contextmanager
def fake_kie(
    latency: float, callbacks: bool, webhook_key: str | None, cores: list[int]
) -> Iterator[tuple[str, int]]:
    """A BenchKie in a child process; yields its URL and process id."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=serve_fake,
        args=(theirs, latency, callbacks, webhook_key, cores),
        name="fake-kie",
        daemon=True,
    )
    process.start()
    theirs.close()
    try:
        try:
            if not ours.poll(60):
                raise BenchError("the fake kie did not start within 60 s")
            url: str = ours.recv()
        except EOFError:
            raise BenchError(f"the fake kie exited with {process.exitcode}") from None
        assert process.pid is not None
        yield url, process.pid
    finally:
        with suppress(OSError):
            ours.send("stop")
        ours.close()
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()


# ---------------------------------------------------------------------------- the server


@contextmanager
def running_server(
    command: list[str], *, core: int | None, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The server, pinned when `core` is given; always stopped when the block ends."""
    pinned = ["taskset", "-c", str(core), *command] if core is not None else command
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            pinned, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


def server_env(
    *,
    admin_token: str,
    fake_url: str,
    base_url: str,
    callbacks: bool,
    webhook_key: str | None,
    concurrency: int,
) -> dict[str, str]:
    # Nothing of the caller's own IMAGINE_* settings: every run is configured the same.
    env = {name: value for name, value in os.environ.items() if not name.startswith("IMAGINE_")}
    env.update(
        IMAGINE_PROVIDER="kie",
        IMAGINE_KIE_API_KEY=FakeKie.api_key,
        IMAGINE_KIE_BASE_URL=fake_url,
        IMAGINE_KIE_CALLBACKS="true" if callbacks else "false",
        IMAGINE_KIE_POLL_RATE=UNLIMITED_RATE,
        IMAGINE_KIE_CREATE_RATE=UNLIMITED_RATE,
        IMAGINE_WORKER_CONCURRENCY=str(concurrency),
        IMAGINE_ADMIN_TOKEN=admin_token,
        IMAGINE_LOG_LEVEL="warning",
    )
    if callbacks:
        env["IMAGINE_PUBLIC_URL"] = base_url
    if webhook_key is not None:
        env["IMAGINE_KIE_WEBHOOK_KEY"] = webhook_key
    return env


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise BenchError(f"the server did not answer within {SERVER_START_TIMEOUT:.0f} s")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak RSS) of a process, in kB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def read_metrics(text: str) -> dict[str, float]:
    """The server's imagine_* counters, one entry per labelled sample."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(imagine_\w+_total)(\{.*\})? (\S+)$", line)
        if match is not None:
            found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


# ---------------------------------------------------------------------------- the database


def connect(database: Path) -> sqlite3.Connection:
    # Read-only, beside the running server (WAL: readers never block its writes).
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)


def task_counts(database: Path) -> dict[str, int]:
    with connect(database) as conn:
        rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}


def upstream_ids(database: Path, ids: Sequence[str]) -> dict[str, str]:
    """Our task id -> kie's task id, for the tasks already submitted."""
    marks = ",".join("?" * len(ids))
    with connect(database) as conn:
        rows = conn.execute(
            f"SELECT id, upstream_id FROM tasks WHERE upstream_id IS NOT NULL AND id IN ({marks})",
            list(ids),
        ).fetchall()
    return {str(task_id): str(upstream) for task_id, upstream in rows}


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    status: str
    upstream_id: str | None
    created: float
    finished: float | None
    error: str | None


def task_records(database: Path) -> list[TaskRecord]:
    with connect(database) as conn:
        rows = conn.execute(
            "SELECT id, status, upstream_id, created_at, finished_at, error_message FROM tasks"
        ).fetchall()
    return [
        TaskRecord(
            id=row[0],
            status=row[1],
            upstream_id=row[2],
            created=epoch(row[3]),
            finished=epoch(row[4]) if row[4] else None,
            error=row[5],
        )
        for row in rows
    ]


def epoch(stored: str) -> float:
    """A timestamp as the SQLite store keeps it (naive UTC text) in seconds since 1970."""
    moment = datetime.datetime.fromisoformat(stored)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


# ---------------------------------------------------------------------------- one run


@dataclass(slots=True)
class Watch:
    """One sampled task watched through GET /api/status from its upstream ready time."""

    task_id: str
    ready: float
    start_delay_s: float = 0.0
    latency_s: float | None = None
    requests: int = 0
    first_answer_final: bool = False
    final_status: str | None = None


@dataclass(slots=True)
class Run:
    callbacks: bool
    tasks: int
    database: Path
    server: subprocess.Popen[bytes]
    api: httpx.AsyncClient
    flood: RawHttp
    fake: httpx.AsyncClient
    key: str
    log: Path
    ids: list[str]
    created_all: bool = False
    create_seconds: float = 0.0


async def create_all(run: Run, clients: int, rate: float) -> None:
    """Every task through POST /api/generate, `clients` requests at a time, task n not
    before n / `rate` seconds (0: as fast as the server takes them); a distinct prompt
    each, so that the fake's records tell how often each task was created."""
    headers = {"Authorization": f"Bearer {run.key}", "Content-Type": "application/json"}
    numbers = iter(range(run.tasks))
    started = time.monotonic()

    async def client() -> None:
        for n in numbers:
            if rate > 0:
                wait = started + n / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            body = orjson.dumps({"model": MODEL, "input": {"prompt": f"{PROMPT} #{n}"}})
            status, answer = await run.flood.request("POST", "/api/generate", body, headers)
            if status != 200:
                raise BenchError(f"POST /api/generate answered {status}: {answer[:300]!r}")
            run.ids[n] = orjson.loads(answer)["data"]["task_id"]

    await asyncio.gather(*(client() for _ in range(clients)))
    run.create_seconds = time.monotonic() - started
    run.created_all = True


async def watch_sample(run: Run, sample: list[int], give_up: float) -> list[Watch]:
    """Watch each sampled task from its upstream ready time, once kie has its id."""
    pending = set(sample)
    watchers: list[asyncio.Task[Watch]] = []
    client = RawHttp(str(run.api.base_url), 64)
    try:
        while pending and time.time() < give_up:
            known = [run.ids[n] for n in sorted(pending) if run.ids[n]]
            submitted = await asyncio.to_thread(upstream_ids, run.database, known) if known else {}
            if submitted:
                answer = await run.fake.post("/bench/tasks", json={"ids": list(submitted.values())})
                facts = answer.json()
                by_id = {task_id: n for n, task_id in enumerate(run.ids) if task_id in submitted}
                for task_id, upstream in submitted.items():
                    if upstream in facts:
                        pending.discard(by_id[task_id])
                        ready = float(facts[upstream]["ready"])
                        watch = Watch(task_id=task_id, ready=ready)
                        watchers.append(asyncio.create_task(watch_one(client, run, watch, give_up)))
            await asyncio.sleep(0.25)
        return list(await asyncio.gather(*watchers))
    finally:
        client.close()


async def watch_one(client: RawHttp, run: Run, watch: Watch, give_up: float) -> Watch:
    await asyncio.sleep(max(0.0, watch.ready - time.time()))
    watch.start_delay_s = max(0.0, time.time() - watch.ready)
    headers = {"Authorization": f"Bearer {run.key}"}
    target = "/api/status?" + urlencode({"task_id": watch.task_id})
    while time.time() < give_up:
        sent = time.time()
        code, answer = await client.request("GET", target, headers=headers)
        received = time.time()
        watch.requests += 1
        if code != 200:
            raise BenchError(f"GET /api/status answered {code}: {answer[:300]!r}")
        status = orjson.loads(answer)["data"]["status"]
        if status != "IN_PROGRESS":
            watch.final_status = status
            watch.latency_s = received - watch.ready
            watch.first_answer_final = watch.requests == 1
            return watch
        gap = 1 / WATCH_HZ if sent - watch.ready < WATCH_FAST_SECONDS else 1.0
        await asyncio.sleep(max(0.0, sent + gap - time.time()))
    return watch


async def follow(run: Run, deadline_after_create: float) -> list[tuple[float, int]]:
    """Until every task has ended: RSS once a second, progress every few seconds.
    Returns the RSS samples (seconds since start, kB)."""
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    last_progress = 0.0
    deadline: float | None = None
    while True:
        await asyncio.sleep(1.0)
        if run.server.poll() is not None:
            raise BenchError(
                f"the server exited with {run.server.returncode}:\n{log_tail(run.log)}"
            )
        elapsed = time.monotonic() - started
        rss = (await asyncio.to_thread(memory_kb, run.server.pid)).get("VmRSS", 0)
        samples.append((round(elapsed, 1), rss))
        counts = await asyncio.to_thread(task_counts, run.database)
        ended = counts.get("SUCCESS", 0) + counts.get("FAILED", 0)
        if elapsed - last_progress >= PROGRESS_EVERY:
            last_progress = elapsed
            stats = (await run.fake.get("/bench/stats")).json()
            calls = stats["calls"]
            console.print(
                f"  {elapsed:4.0f} s  generate {sum(1 for i in run.ids if i):>5}  "
                f"kie: create {calls.get('create', 0):>5} poll {calls.get('poll', 0):>6} "
                f"callback {sum(stats['callbacks'].values()):>5}  "
                f"SUCCESS {counts.get('SUCCESS', 0):>5} FAILED {counts.get('FAILED', 0):>3}  "
                f"RSS {rss / 1024:.0f} MB"
            )
        if run.created_all and ended >= run.tasks:
            return samples
        if run.created_all and deadline is None:
            deadline = time.monotonic() + deadline_after_create
        if deadline is not None and time.monotonic() > deadline:
            raise BenchError(
                f"{run.tasks - ended} tasks were still in progress {deadline_after_create:.0f} s "
                f"after the last was created: {counts}\n{log_tail(run.log)}"
            )


async def one_run(args: argparse.Namespace, mode: str, root: Path) -> dict[str, Any]:
    """One mode (signed, unsigned or polling), end to end: fake, server, tasks, figures."""
    callbacks = mode != "polling"
    webhook_key = secrets.token_urlsafe(24) if mode == "signed" else None
    data_dir = root / mode / "data"
    data_dir.mkdir(parents=True)
    log = root / mode / "server.log"
    admin_token = secrets.token_urlsafe(24)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    others = other_cores() if args.pin else []
    console.print(
        f"[bold]{mode}[/bold]: {args.tasks} tasks, {args.latency:g} s upstream latency, "
        f"worker concurrency {args.concurrency}"
    )
    with fake_kie(args.latency, callbacks, webhook_key, others) as (fake_url, fake_pid):
        env = server_env(
            admin_token=admin_token,
            fake_url=fake_url,
            base_url=base_url,
            callbacks=callbacks,
            webhook_key=webhook_key,
            concurrency=args.concurrency,
        )
        command = imagine("serve", "--port", str(port), "--data-dir", str(data_dir))
        command.append("--no-access-log")
        core = SERVER_CORE if args.pin else None
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        with running_server(command, core=core, env=env, log=log) as server:
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as api,
                httpx.AsyncClient(base_url=fake_url, timeout=60) as fake,
            ):
                await wait_ready(api, server, log)
                rss_idle = memory_kb(server.pid)
                key = await create_key(api, admin_token)
                run = Run(
                    callbacks=callbacks,
                    tasks=args.tasks,
                    database=data_dir / "imagine.db",
                    server=server,
                    api=api,
                    flood=RawHttp(base_url, args.clients),
                    fake=fake,
                    key=key,
                    log=log,
                    ids=[""] * args.tasks,
                )
                sample = sample_indexes(args.tasks, args.sample)
                cpu_start, wall_before = cpu_now(server.pid, fake_pid), time.time()
                give_up = time.time() + args.latency + args.timeout + 120
                creating = asyncio.create_task(create_all(run, args.clients, args.rate))
                watching = asyncio.create_task(watch_sample(run, sample, give_up))
                following = asyncio.create_task(follow(run, args.latency + args.timeout))
                try:
                    await creating
                    cpu_created = cpu_now(server.pid, fake_pid)
                    console.print(
                        f"  created {args.tasks} tasks in {run.create_seconds:.1f} s "
                        f"({args.tasks / run.create_seconds:.0f}/s)"
                    )
                    rss_samples = await following
                    watches = await watching
                finally:
                    for job in (creating, watching, following):
                        job.cancel()
                    run.flood.close()
                wall = time.time() - wall_before
                cpu_end = cpu_now(server.pid, fake_pid)
                memory = memory_kb(server.pid)
                metrics = read_metrics((await api.get("/metrics")).text)
                stats = (await fake.get("/bench/stats")).json()
                facts = (await fake.post("/bench/tasks", json={"ids": None})).json()
                records = task_records(run.database)
                await check_status(api, key, records, {w.task_id for w in watches})
    warnings = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r"WARNING|ERROR|Traceback|lease lost|failed|retrying", line)
    ]
    return {
        "mode": mode,
        "create_seconds": round(run.create_seconds, 2),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": {
            "create": cpu_spent(cpu_start, cpu_created),
            "run": cpu_spent(cpu_start, cpu_end),
        },
        "rss_idle_mb": round(rss_idle.get("VmRSS", 0) / 1024, 1),
        "rss_peak_mb": round(memory.get("VmHWM", 0) / 1024, 1),
        "rss_end_mb": round(memory.get("VmRSS", 0) / 1024, 1),
        "rss_samples_kb": rss_samples,
        "server_metrics": metrics,
        "fake_stats": stats,
        "log_warnings": len(warnings),
        "log_warning_lines": warnings[:20],
        **analyse(args, mode, records, facts, stats, watches),
    }


async def create_key(client: httpx.AsyncClient, admin_token: str) -> str:
    answer = await client.post(
        "/admin/keys",
        json={"name": "bench", "credits": CREDITS},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    answer.raise_for_status()
    key: str = answer.json()["data"]["key"]
    return key


async def check_status(
    client: httpx.AsyncClient, key: str, records: list[TaskRecord], watched: set[str]
) -> None:
    """The server itself must show an unwatched task as ended (it has, so no refresh)."""
    unwatched = next((r for r in records if r.id not in watched), None)
    if unwatched is None:
        return
    answer = await client.get(
        "/api/status", params={"task_id": unwatched.id}, headers={"Authorization": f"Bearer {key}"}
    )
    answer.raise_for_status()
    shown = answer.json()["data"]["status"]
    if shown != unwatched.status:
        raise BenchError(f"task {unwatched.id} is {shown} on /api/status, {unwatched.status} in db")


def cpu_now(server_pid: int, fake_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, the fake and this process (the load generator)."""
    return {
        "server": process_cpu_seconds(server_pid),
        "fake": process_cpu_seconds(fake_pid),
        "driver": time.process_time(),
    }


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 1) for name in before}


def sample_indexes(tasks: int, sample: int) -> list[int]:
    """Evenly spread over the creation order, so the sample spans the whole run."""
    if sample <= 0:
        return []
    step = max(1, tasks // sample)
    return list(range(0, tasks, step))[:sample]


def other_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0) - {SERVER_CORE})


# ---------------------------------------------------------------------------- the figures


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "n": len(values),
        "mean": rounded(sum(values) / len(values)) if values else None,
        "p50": rounded(percentile(values, 50)),
        "p90": rounded(percentile(values, 90)),
        "p99": rounded(percentile(values, 99)),
        "max": rounded(max(values)) if values else None,
    }


def schedule_polls(latency: float, gap: str) -> int:
    """Polls the no-callback schedule makes until the first one at or after `latency`,
    with every gap at its shortest ("min": the most polls) or longest ("max")."""
    age, polls = 0.0, 0
    while True:
        _, shortest, longest = next(rule for rule in POLL_RULES if age < rule[0])
        age += shortest if gap == "min" else longest
        polls += 1
        if age >= latency:
            return polls


def schedule_polls_mean(latency: float, runs: int = 20_000) -> float:
    """The mean number of polls with uniformly drawn gaps, as the server draws them."""
    draw = random.Random(1)
    total = 0
    for _ in range(runs):
        age, polls = 0.0, 0
        while age < latency:
            _, shortest, longest = next(rule for rule in POLL_RULES if age < rule[0])
            age += draw.uniform(shortest, longest)
            polls += 1
        total += polls
    return total / runs


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """Most intervals open at one moment (an interval is open on [start, end))."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def analyse(
    args: argparse.Namespace,
    mode: str,
    records: list[TaskRecord],
    facts: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    watches: list[Watch],
) -> dict[str, Any]:
    statuses = Counter(record.status for record in records)
    ended = [r for r in records if r.status != "IN_PROGRESS"]
    watched = {watch.task_id for watch in watches}
    calls = stats["calls"]
    creates_by_prompt = Counter(str(fact["prompt"]) for fact in facts.values())

    polls: dict[str, list[float]] = {"all": [], "watched": [], "unwatched": []}
    finish: dict[str, list[float]] = {"all": [], "watched": [], "unwatched": []}
    callback_delay: list[float] = []
    for record in ended:
        fact = facts.get(record.upstream_id or "")
        group = "watched" if record.id in watched else "unwatched"
        count = float(fact["polls"]) if fact else 0.0
        polls["all"].append(count)
        polls[group].append(count)
        if fact is not None and record.finished is not None and record.status == "SUCCESS":
            delay = record.finished - float(fact["ready"])
            finish["all"].append(delay)
            finish[group].append(delay)
        if fact is not None and fact["callback_answered"] is not None:
            callback_delay.append(float(fact["callback_answered"]) - float(fact["ready"]))

    upstream = [(float(f["created"]), float(f["ready"])) for f in facts.values()]
    ours = [(r.created, r.finished or math.inf) for r in records]
    observed = [w.latency_s for w in watches if w.latency_s is not None]
    finished_count = max(1, len(ended))
    callbacks = mode != "polling"
    poll_bound = expected_polls(mode, args.latency)
    readies = [float(f["ready"]) for f in facts.values()]
    last_finish = max((r.finished for r in ended if r.finished is not None), default=None)
    return {
        "tasks": len(records),
        "finish_window_s": round(last_finish - min(readies), 1)
        if readies and last_finish
        else None,
        "ready_window_s": round(max(readies) - min(readies), 1) if readies else None,
        "statuses": dict(statuses),
        "failures": Counter(r.error for r in records if r.status == "FAILED").most_common(5),
        "peak_in_flight_upstream": peak_overlap(upstream),
        "peak_in_progress_server": peak_overlap(ours),
        "upstream_submit_spread_s": round(
            max(s for s, _ in upstream) - min(s for s, _ in upstream), 2
        )
        if upstream
        else None,
        "creates_total": int(calls.get("create", 0)),
        "creates_per_finished_task": round(calls.get("create", 0) / finished_count, 4),
        "creates_max_per_task": max(creates_by_prompt.values(), default=0),
        "tasks_created_twice": sum(1 for n in creates_by_prompt.values() if n > 1),
        "polls_total": int(calls.get("poll", 0)),
        "polls_per_finished_task": round(calls.get("poll", 0) / finished_count, 4),
        "polls": {group: spread(values, 2) for group, values in polls.items()},
        "polls_histogram": dict(sorted(Counter(int(n) for n in polls["all"]).items())),
        "schedule_polls_max": poll_bound,
        "schedule_polls_min": poll_bound if callbacks else schedule_polls(args.latency, "max"),
        "schedule_polls_mean": float(poll_bound)
        if callbacks
        else round(schedule_polls_mean(args.latency), 2),
        "callbacks_sent": stats["callbacks"],
        "callback_states": dict(Counter(str(f["callback_state"]) for f in facts.values())),
        "callbacks_sent_before_ready": sum(
            1
            for f in facts.values()
            if f["callback_sent"] is not None and f["callback_sent"] < f["ready"]
        ),
        "callback_answered_after_ready_s": spread(callback_delay),
        "finish_after_ready_s": {group: spread(values) for group, values in finish.items()},
        "status_observed_s": spread(observed),
        "watch": {
            "sampled": len(watches),
            "gave_up": sum(1 for w in watches if w.latency_s is None),
            "started_late": sum(1 for w in watches if w.start_delay_s > 0.1),
            "first_answer_final": sum(1 for w in watches if w.first_answer_final),
            "status_requests": sum(w.requests for w in watches),
            "final_statuses": dict(Counter(str(w.final_status) for w in watches)),
        },
    }


def expected_polls(mode: str, latency: float) -> int:
    """The most polls per task the server's design makes, no client polling status: with
    a signed callback none, with an unsigned one the poll that confirms it, without
    callbacks the backoff schedule's (every gap at its shortest); with callbacks, one
    more when the 45 s fallback poll comes before the task ends."""
    if mode == "polling":
        return schedule_polls(latency, "min")
    fallback = 1 if latency >= CALLBACK_FALLBACK_POLL else 0
    return (1 if mode == "unsigned" else 0) + fallback


def targets(mode: dict[str, Any], callbacks: bool) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for one mode; met None where the target does not apply."""
    result: list[tuple[str, str, bool | None]] = []
    result.append(
        (
            f"creates per task <= {TARGET_CREATES}",
            f"max {mode['creates_max_per_task']}",
            mode["creates_max_per_task"] <= TARGET_CREATES,
        )
    )
    polls_max = mode["polls"]["all"]["max"] or 0
    bound = TARGET_POLLS_WITH_CALLBACKS if callbacks else mode["schedule_polls_max"]
    label = "with callbacks" if callbacks else "schedule's bound"
    result.append(
        (f"polls per task <= {bound} ({label})", f"max {polls_max:g}", polls_max <= bound)
    )
    result.append(
        (
            f"peak RSS < {TARGET_RSS_MB:.0f} MB",
            f"{mode['rss_peak_mb']:.0f} MB",
            mode["rss_peak_mb"] < TARGET_RSS_MB,
        )
    )
    for name, label in (
        ("finish_after_ready_s", "all tasks, db"),
        ("status_observed_s", "watched"),
    ):
        figures = mode[name]["all"] if name == "finish_after_ready_s" else mode[name]
        p99 = figures["p99"]
        shown = "n/a" if p99 is None else f"{p99:.3f} s"
        met = None if not callbacks or p99 is None else p99 < TARGET_P99_S
        result.append((f"p99 ready -> SUCCESS < {TARGET_P99_S:g} s ({label})", shown, met))
    return result


# ---------------------------------------------------------------------------- output


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _fmt(figures: dict[str, Any], digits: int = 3) -> str:
    if not figures["n"]:
        return "-"
    return " / ".join(f"{figures[name]:.{digits}f}" for name in ("p50", "p99", "max"))


def _polls(mode: dict[str, Any], group: str) -> str:
    figures = mode["polls"][group]
    if not figures["n"]:
        return "-"
    return f"{figures['mean']:.2f} / {figures['p99']:g} / {figures['max']:g}"


def _callback_states(mode: dict[str, Any]) -> str:
    if not mode["callbacks_sent"]:
        return "-"
    return f"{mode['callback_states']} / {mode['callbacks_sent_before_ready']}"


def _windows(mode: dict[str, Any]) -> str:
    return f"{mode['ready_window_s']} / {mode['finish_window_s']}"


def _cpu(mode: dict[str, Any], phase: str) -> str:
    spent = mode["cpu_seconds"][phase]
    return f"{spent['server']:.1f} / {spent['fake']:.1f} / {spent['driver']:.1f}"


def _schedule(mode: dict[str, Any]) -> str:
    low, mean, high = (mode[f"schedule_polls_{name}"] for name in ("min", "mean", "max"))
    return f"{low} / {mean:.1f} / {high}"


def print_report(data: dict[str, Any]) -> None:
    machine = data["machine"]
    console.print(
        "\n"
        + escape(
            f"{machine['cpu_model']}, nproc {machine['nproc']}, Python {machine['python']}, "
            f"{machine['date']}"
        )
    )
    modes = data["modes"]
    table = Table("figure", *(mode["mode"] for mode in modes))
    table.columns[0].no_wrap = True

    def row(label: str, shown: Any) -> None:
        table.add_row(label, *(str(shown(mode)) for mode in modes))

    row(
        "tasks: SUCCESS / FAILED",
        lambda m: f"{m['statuses'].get('SUCCESS', 0)} / {m['statuses'].get('FAILED', 0)}",
    )
    row("created via API in (s)", lambda m: f"{m['create_seconds']:.1f}")
    row("peak in flight upstream", lambda m: m["peak_in_flight_upstream"])
    row(
        "creates per task: mean / max",
        lambda m: f"{m['creates_per_finished_task']:.3f} / {m['creates_max_per_task']}",
    )
    for group in ("all", "unwatched", "watched"):
        row(f"polls per task ({group}): mean / p99 / max", lambda m, g=group: _polls(m, g))
    row("polls by design: min / mean / max", _schedule)
    row("callbacks sent (by answer)", lambda m: m["callbacks_sent"] or "-")
    row("callbacks: state told / sent before ready", _callback_states)
    row(
        "callback answered after ready (s) p50/p99/max",
        lambda m: _fmt(m["callback_answered_after_ready_s"]),
    )
    row(
        "ready -> finished_at, all (s) p50/p99/max",
        lambda m: _fmt(m["finish_after_ready_s"]["all"]),
    )
    row("ready -> finished_at, unwatched", lambda m: _fmt(m["finish_after_ready_s"]["unwatched"]))
    row("ready -> /api/status SUCCESS, watched", lambda m: _fmt(m["status_observed_s"]))
    row(
        "watched: started late / first answer final",
        lambda m: f"{m['watch']['started_late']} / {m['watch']['first_answer_final']}",
    )
    row("first ready -> last ready / last finish, s", _windows)
    row("peak RSS (VmHWM) MB", lambda m: f"{m['rss_peak_mb']:.0f}")
    row("RSS idle / end MB", lambda m: f"{m['rss_idle_mb']:.0f} / {m['rss_end_mb']:.0f}")
    row("CPU s in creation: server / fake / driver", lambda m: _cpu(m, "create"))
    row("CPU s in the run: server / fake / driver", lambda m: _cpu(m, "run"))
    row("run wall s", lambda m: f"{m['wall_seconds']:.0f}")
    row("server log warnings", lambda m: m["log_warnings"])
    console.print(table)
    for mode in modes:
        console.print(f"[bold]{mode['mode']}[/bold]")
        for label, measured, met in mode["targets"]:
            mark = "" if met is None else "[green]PASS[/green]" if met else "[red]FAIL[/red]"
            console.print(f"  {label:<52} {measured:>12}  {mark or 'no target'}")
        for line in mode["log_warning_lines"][:5]:
            console.print(f"  [yellow]log:[/yellow] {escape(line[:200])}")


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    modes = args.modes
    results = []
    with tempfile.TemporaryDirectory(prefix="imagine-bench-upstream-") as tmp:
        for name in modes:
            mode = await one_run(args, name, Path(tmp))
            mode["targets"] = targets(mode, name != "polling")
            results.append(mode)
    return {
        "machine": machine_facts(),
        "settings": {
            "tasks": args.tasks,
            "latency_s": args.latency,
            "worker_concurrency": args.concurrency,
            "api_clients": args.clients,
            "create_rate_per_s": args.rate,
            "watch_sample": args.sample,
            "watch_hz": WATCH_HZ,
            "watch_fast_s": WATCH_FAST_SECONDS,
            "kie_poll_rate": UNLIMITED_RATE,
            "kie_create_rate": UNLIMITED_RATE,
            "server_core": SERVER_CORE if args.pin else None,
            "other_cores": other_cores() if args.pin else None,
        },
        "modes": results,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=DESCRIPTION)
    parser.add_argument("--tasks", type=int, default=None, help="tasks per run (10000)")
    parser.add_argument("--latency", type=float, default=None, help="upstream seconds (30)")
    parser.add_argument("--sample", type=int, default=None, help="tasks watched via status (50)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 tasks, 5 s latency")
    parser.add_argument("--concurrency", type=int, default=512, help="IMAGINE_WORKER_CONCURRENCY")
    parser.add_argument("--clients", type=int, default=64, help="concurrent generate requests")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="tasks created per second; default: all within 80%% of the latency, so that all "
        "are in flight together; 0: as fast as the server takes them (a burst)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds allowed after latency to finish"
    )
    parser.add_argument(
        "--modes",
        default="signed,polling",
        help="comma-separated runs, in order: signed (callbacks with a webhook key), "
        "unsigned (callbacks without one) and polling (no callbacks)",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    quick = {"tasks": 300, "latency": 5.0, "sample": 30}
    full = {"tasks": 10_000, "latency": 30.0, "sample": 50}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rate is None:
        args.rate = args.tasks / (args.latency * 0.8)
    if args.tasks < 1 or args.latency <= 0 or args.sample < 0 or args.clients < 1:
        parser.error("--tasks and --clients must be at least 1, --latency positive")
    args.modes = [name.strip() for name in args.modes.split(",") if name.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: name one or more of {', '.join(MODES)}")
    if not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be 1 to 1024 (the server's limit)")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.pin:
        if SERVER_CORE not in os.sched_getaffinity(0) or not other_cores():
            console.print("[red]pinning needs core 0 and one more;[/red] try --no-pin")
            return 2
        # The driver and the fake share the cores the server does not use.
        os.sched_setaffinity(0, other_cores())
    try:
        data = asyncio.run(benchmark(args))
    except (BenchError, httpx.HTTPError) as exc:
        console.print(f"[red]benchmark failed:[/red] {type(exc).__name__}: {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]; the server and the fake are stopped")
        return 130
    print_report(data)
    write_results(data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

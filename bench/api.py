"""Throughput of the hot API endpoints, as ratios to a no-op endpoint of the same server.

    .venv/bin/python -m bench.api [--database sqlite|postgresql] [--duration 10]
                               [--connections 32] [--out result.json]

One run starts `imagine serve --no-worker` on CPU core 0 and drives it with `wrk` on
core 1. It measures GET /healthz (the no-op: HTTP stack and framework only), POST
/api/generate (auth, debit, task insert) on one account, the same spread over many
accounts, and GET /api/status on finished tasks (auth, task read), then the no-op again.
With `--database postgresql` the server runs on a new database of the PostgreSQL at
`IMAGINE_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432/test, dropped
afterwards), whose processes are pinned to core 1 with wrk for the run, and their CPU
per request is reported next to the server's. The machine is shared and noisy, so absolute figures
drift between runs; the ratios to the no-op baseline taken in the same run are the figures
to compare. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

SERVER_CORE = 0
LOADGEN_CORE = 1
WARMUP_SECONDS = 2
# The admin API caps one grant at 10**12 credits: enough for any run (5 credits a task).
CREDITS = 10**12
MODEL = "grok-imagine/text-to-image"
PROMPT = "A majestic dragon flying over a neon-lit cyberpunk city"
TARGETS = {
    "sqlite": {"generate": 0.5, "status": 0.7},
    "postgresql": {"generate": 0.35, "status": 0.6},
}
ONE_ACCOUNT_TARGET = 0.8
"""Generate on one account, as a ratio to generate spread over many: one account's
debits serialise on its balance row."""
SPREAD_ACCOUNTS = 64
POSTGRES_URL = os.environ.get("IMAGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SERVER_START_TIMEOUT = 60.0
WORKER_TIMEOUT = 900.0

DESCRIPTION = "Throughput of the hot API endpoints, as ratios to a no-op endpoint."

console = Console()


class BenchError(Exception):
    """A run whose figures would be meaningless; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    path: str
    script: Path | None


@dataclass(frozen=True, slots=True)
class WrkResult:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class Measurement:
    """wrk's figures plus the server's own CPU use: on a shared core, CPU per request shows
    whether a low req/s came from the code or from neighbours taking the core."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: dict[str, int]
    server_cpu_pct: float
    server_cpu_us_per_request: float
    database_cpu_us_per_request: float | None


# ---------------------------------------------------------------------------- machine


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge the figures: cores, CPU, Python, wrk, when."""
    return {
        "nproc": int(_output(["nproc"]).strip()),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": _output(["wrk", "--version"]).partition("Copyright")[0].strip(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _output(command: Sequence[str]) -> str:
    # wrk --version exits 1 after printing, so the exit status is not checked.
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def check_cores() -> None:
    usable = os.sched_getaffinity(0)
    if not {SERVER_CORE, LOADGEN_CORE} <= usable:
        raise BenchError(
            f"needs CPU cores {SERVER_CORE} and {LOADGEN_CORE}; this process may use {usable}"
        )


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(admin_token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        IMAGINE_ADMIN_TOKEN=admin_token,
        IMAGINE_PREVIEW_DELAY="0",
        IMAGINE_LOG_LEVEL="warning",
    )
    return env


@contextmanager
def running(
    command: list[str], *, core: int | None, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (pinned to `core` unless None), always stopped (SIGTERM, then
    SIGKILL) when the block ends."""
    with open(log, "wb") as out:
        # A session of its own: Ctrl-C reaches only us, and we stop the child in order.
        pinned = command if core is None else ["taskset", "-c", str(core), *command]
        proc = subprocess.Popen(
            pinned,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def imagine(*args: str) -> list[str]:
    # The interpreter running this script is the project's venv: no `uv run` in between.
    return [sys.executable, "-m", "imagine", *args]


def wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise BenchError(f"the server did not answer within {SERVER_START_TIMEOUT:.0f} s")


# ---------------------------------------------------------------------------- database


class Postgres:
    """A database of its own on the machine's PostgreSQL, and its processes' CPU."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = "imagine_bench_" + secrets.token_hex(6)
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"
        self._affinity: dict[int, set[int]] = {}

    def _admin(self, statement: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=10)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())

    def create(self) -> None:
        try:
            self._admin(f'CREATE DATABASE "{self.name}"')
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"PostgreSQL at {self.admin_url} can't be used: {exc}") from None

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def statuses(self) -> dict[str, int]:
        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.url, timeout=10)
            try:
                return list(await conn.fetch("SELECT status, count(*) FROM tasks GROUP BY status"))
            finally:
                await conn.close()

        return {str(row[0]): int(row[1]) for row in asyncio.run(run())}

    @staticmethod
    def pids() -> list[int]:
        """Every process of the PostgreSQL server (postmaster, backends, helpers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += process_cpu_seconds(pid)
            except OSError:
                continue  # a backend that ended in between
        return total

    def pin(self, core: int) -> None:
        """Put PostgreSQL on `core` (new backends inherit it from the postmaster)."""
        for pid in self.pids():
            try:
                self._affinity[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, {core})
            except OSError:
                continue
        if not self._affinity:
            console.print("[yellow]warning:[/yellow] PostgreSQL's processes could not be pinned")

    def unpin(self) -> None:
        for pid, cores in self._affinity.items():
            try:
                os.sched_setaffinity(pid, cores)
            except OSError:
                continue
        everything = set(range(os.cpu_count() or 1))
        for pid in self.pids():  # backends started during the run
            try:
                os.sched_setaffinity(pid, everything)
            except OSError:
                continue


# ---------------------------------------------------------------------------- fixtures


def create_key(client: httpx.Client, admin_token: str) -> str:
    answer = client.post(
        "/admin/keys",
        json={"name": "bench", "credits": CREDITS},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    answer.raise_for_status()
    key: str = answer.json()["data"]["key"]
    return key


def generate_body() -> dict[str, Any]:
    return {"model": MODEL, "input": {"prompt": PROMPT}}


def create_tasks(client: httpx.Client, key: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    for _ in range(count):
        answer = client.post("/api/generate", json=generate_body(), headers=headers)
        answer.raise_for_status()
        ids.append(answer.json()["data"]["task_id"])
    return ids


def task_statuses(database: Path | Postgres) -> dict[str, int]:
    """Tasks by status, read straight from the database (SQLite in WAL: readers don't
    block). The database is new, so every task in it is one of ours."""
    if isinstance(database, Postgres):
        return database.statuses()
    with closing(sqlite3.connect(database, timeout=5)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}


def wait_finished(
    database: Path | Postgres, ids: list[str], worker: subprocess.Popen[bytes]
) -> None:
    """Until every task is SUCCESS: status is measured on results, as clients poll them."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while time.monotonic() < deadline:
        counts = task_statuses(database)
        if counts.get("SUCCESS", 0) == len(ids):
            return
        if counts.get("FAILED"):
            raise BenchError(f"{counts['FAILED']} preparation tasks FAILED: {counts}")
        if worker.poll() is not None:
            raise BenchError(f"the worker exited with {worker.returncode} before finishing")
        time.sleep(0.5)
    raise BenchError(f"the worker did not finish {len(ids)} tasks in {WORKER_TIMEOUT:.0f} s")


def check_finished(client: httpx.Client, key: str, task_id: str) -> None:
    """The server itself must show the task as SUCCESS, or status would measure something else."""
    answer = client.get(
        "/api/status", params={"task_id": task_id}, headers={"Authorization": f"Bearer {key}"}
    )
    answer.raise_for_status()
    shown = answer.json()["data"]["status"]
    if shown != "SUCCESS":
        raise BenchError(f"task {task_id} is {shown} on the status endpoint, not SUCCESS")


def finish_tasks(
    root: Path, data_dir: Path, ids: list[str], env: dict[str, str], postgres: Postgres | None
) -> float:
    """Run a worker on the load generator's core (idle now) until the tasks end; seconds."""
    started = time.monotonic()
    worker_cmd = imagine("worker", "--data-dir", str(data_dir))
    log = root / "worker.log"
    with running(worker_cmd, core=LOADGEN_CORE, env=env, log=log) as worker:
        try:
            wait_finished(postgres or data_dir / "imagine.db", ids, worker)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{log_tail(log)}") from None
    return time.monotonic() - started


# ---------------------------------------------------------------------------- wrk


def lua_string(value: str) -> str:
    # JSON's escapes of an ASCII string (\" \\ \n) are valid Lua escapes too.
    if not value.isascii():
        raise ValueError("Lua strings here must be ASCII")
    return json.dumps(value)


def generate_script(keys: list[str]) -> str:
    """POST /api/generate with each key in turn (one key: every debit on one account)."""
    body = json.dumps(generate_body(), separators=(",", ":"))
    listed = ",\n".join(f"  {lua_string('Bearer ' + key)}" for key in keys)
    return (
        f"local keys = {{\n{listed}\n}}\n"
        f"local body = {lua_string(body)}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #keys + 1\n"
        '  return wrk.format("POST", "/api/generate", '
        '{["Authorization"] = keys[i], ["Content-Type"] = "application/json"}, body)\n'
        "end\n"
    )


def status_script(key: str, ids: list[str]) -> str:
    # Cycling over many finished tasks: every request reads a row, not one cached page.
    listed = ",\n".join(f"  {lua_string(task_id)}" for task_id in ids)
    return (
        f"local ids = {{\n{listed}\n}}\n"
        f'local headers = {{["Authorization"] = {lua_string("Bearer " + key)}}}\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #ids + 1\n"
        '  return wrk.format("GET", "/api/status?task_id=" .. ids[i], headers)\n'
        "end\n"
    )


def write_targets(root: Path, key: str, spread: list[str], ids: list[str]) -> dict[str, Target]:
    scripts = root / "lua"
    scripts.mkdir()
    (scripts / "generate.lua").write_text(generate_script([key]))
    (scripts / "generate_spread.lua").write_text(generate_script(spread))
    (scripts / "status.lua").write_text(status_script(key, ids))
    return {
        "noop": Target("noop", "/healthz", None),
        "generate": Target("generate", "/api/generate", scripts / "generate.lua"),
        "generate_spread": Target(
            "generate_spread", "/api/generate", scripts / "generate_spread.lua"
        ),
        "status": Target("status", "/api/status", scripts / "status.lua"),
    }


def run_wrk(base_url: str, target: Target, *, seconds: int, connections: int) -> WrkResult:
    command = ["taskset", "-c", str(LOADGEN_CORE), "wrk", "-t1", f"-c{connections}"]
    # wrk drops requests slower than --timeout (default 2 s) from its latency figures;
    # a long timeout keeps slow answers in p99 instead of hiding them as socket errors.
    command += [f"-d{seconds}s", "--timeout", "30s", "--latency"]
    if target.script is not None:
        command += ["-s", str(target.script)]
    command.append(base_url + target.path)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed on {target.name} ({done.returncode}):\n{done.stderr}")
    result = parse_wrk(target.name, done.stdout)
    if result.non_2xx:
        # Errors answer faster than real work: the figures would flatter the endpoint.
        raise BenchError(
            f"{target.name}: {result.non_2xx} of {result.requests} responses were not 2xx/3xx; "
            f"the figures would be meaningless\n{done.stdout}"
        )
    return result


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(name: str, text: str) -> WrkResult:
    """The figures of wrk's --latency report; BenchError if one is missing."""
    errors = _SOCKET_ERRORS.search(text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        name=name,
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", text, name)),
        p50_ms=_latency_ms("50%", text, name),
        p99_ms=_latency_ms("99%", text, name),
        requests=int(_find(r"(\d+) requests in", text, name)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0),
                strict=True,
            )
        ),
    )


def _find(pattern: str, text: str, name: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise BenchError(f"{name}: no match for {pattern!r} in wrk's output:\n{text}")
    return found.group(1)


def _latency_ms(percentile: str, text: str, name: str) -> float:
    found = re.search(rf"^\s*{percentile}\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if found is None:
        raise BenchError(f"{name}: no {percentile} latency in wrk's output:\n{text}")
    return float(found.group(1)) * _UNIT_MS[found.group(2)]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process and all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_one(
    base_url: str,
    target: Target,
    *,
    seconds: int,
    connections: int,
    server_pid: int,
    postgres: Postgres | None,
) -> Measurement:
    database_before = postgres.cpu_seconds() if postgres else 0.0
    cpu_before, started = process_cpu_seconds(server_pid), time.monotonic()
    result = run_wrk(base_url, target, seconds=seconds, connections=connections)
    cpu = process_cpu_seconds(server_pid) - cpu_before
    elapsed = time.monotonic() - started
    database_cpu = postgres.cpu_seconds() - database_before if postgres else None
    return Measurement(
        name=result.name,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        requests=result.requests,
        socket_errors=result.socket_errors,
        server_cpu_pct=100 * cpu / elapsed,
        server_cpu_us_per_request=1e6 * cpu / max(result.requests, 1),
        database_cpu_us_per_request=(
            None if database_cpu is None else 1e6 * database_cpu / max(result.requests, 1)
        ),
    )


# ---------------------------------------------------------------------------- run


def measure(
    base_url: str,
    targets: dict[str, Target],
    args: argparse.Namespace,
    server_pid: int,
    postgres: Postgres | None,
) -> list[Measurement]:
    """Warm every endpoint, then noop, generate (one account, then many), status and noop
    again (to show drift)."""
    for target in targets.values():
        console.print(f"warm-up {target.name} ({WARMUP_SECONDS} s)")
        run_wrk(base_url, target, seconds=WARMUP_SECONDS, connections=args.connections)
    results = []
    for name in ("noop", "generate", "generate_spread", "status", "noop"):
        console.print(f"measuring {name} ({args.duration} s, {args.connections} connections)")
        results.append(
            measure_one(
                base_url,
                targets[name],
                seconds=args.duration,
                connections=args.connections,
                server_pid=server_pid,
                postgres=postgres,
            )
        )
    return results


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run in a temp dir that is removed, with every process stopped, at the end."""
    admin_token = secrets.token_urlsafe(24)
    env = service_env(admin_token)
    postgres = Postgres(args.postgres_url) if args.database == "postgresql" else None
    if postgres is not None:
        postgres.create()
        env["IMAGINE_DATABASE_URL"] = postgres.url.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
        postgres.pin(LOADGEN_CORE)
    try:
        return _benchmark(args, env, admin_token, postgres)
    finally:
        if postgres is not None:
            postgres.unpin()
            postgres.drop()


def _benchmark(
    args: argparse.Namespace, env: dict[str, str], admin_token: str, postgres: Postgres | None
) -> dict[str, Any]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        serve = imagine("serve", "--port", str(port), "--data-dir", str(data_dir))
        serve += ["--no-worker", "--no-access-log"]
        log = root / "server.log"
        with (
            running(serve, core=SERVER_CORE, env=env, log=log) as server,
            httpx.Client(base_url=base_url, timeout=30) as client,
        ):
            wait_ready(client, server, log)
            key = create_key(client, admin_token)
            spread = [create_key(client, admin_token) for _ in range(SPREAD_ACCOUNTS)]
            console.print(f"creating {args.tasks} tasks")
            ids = create_tasks(client, key, args.tasks)
            console.print(f"rendering them with a worker on core {LOADGEN_CORE}")
            worker_seconds = finish_tasks(root, data_dir, ids, env, postgres)
            check_finished(client, key, ids[-1])
            console.print(f"all {len(ids)} tasks SUCCESS after {worker_seconds:.1f} s")
            targets = write_targets(root, key, spread, ids)
            results = measure(base_url, targets, args, server.pid, postgres)
            if server.poll() is not None:
                raise BenchError(f"the server died during the run:\n{log_tail(log)}")
    return report(results, args, worker_seconds)


def report(
    results: list[Measurement], args: argparse.Namespace, worker_seconds: float
) -> dict[str, Any]:
    noop_start, generate, spread, status, noop_end = results
    baseline = (noop_start.rps + noop_end.rps) / 2
    ratios = {}
    for result in (generate, status):
        ratio = result.rps / baseline
        target = TARGETS[args.database][result.name]
        ratios[result.name] = {"ratio": ratio, "target": target, "pass": ratio >= target}
    one_account = generate.rps / spread.rps
    ratios["generate_one_account_vs_spread"] = {
        "ratio": one_account,
        "target": ONE_ACCOUNT_TARGET,
        "pass": one_account >= ONE_ACCOUNT_TARGET,
    }
    return {
        "machine": machine_facts(),
        "settings": {
            "database": args.database,
            "duration_s": args.duration,
            "connections": args.connections,
            "warmup_s": WARMUP_SECONDS,
            "status_tasks": args.tasks,
            "server_core": SERVER_CORE,
            "loadgen_core": LOADGEN_CORE,
            "prepare_worker_s": round(worker_seconds, 1),
        },
        "results": {
            "noop_start": asdict(noop_start),
            "generate": asdict(generate),
            "generate_spread": asdict(spread),
            "status": asdict(status),
            "noop_end": asdict(noop_end),
        },
        "noop_baseline_rps": baseline,
        "noop_drift_pct": 100 * (noop_end.rps - noop_start.rps) / noop_start.rps,
        "ratios": ratios,
    }


# ---------------------------------------------------------------------------- output


def print_report(data: dict[str, Any]) -> None:
    machine = data["machine"]
    facts = (
        f"{machine['cpu_model']}, nproc {machine['nproc']}, Python {machine['python']}, "
        f"{machine['wrk']}, {machine['date']}"
    )
    console.print("\n" + escape(facts))
    table = Table(
        "endpoint",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "CPU%",
        "CPU us/req",
        "DB CPU us/req",
        "errors",
    )
    labels = {
        "noop_start": "noop (start)",
        "generate": "generate",
        "generate_spread": f"generate ({SPREAD_ACCOUNTS} accounts)",
        "status": "status",
        "noop_end": "noop (end)",
    }
    for field, label in labels.items():
        row = data["results"][field]
        errors = sum(row["socket_errors"].values())
        table.add_row(
            label,
            f"{row['rps']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["requests"]),
            f"{row['server_cpu_pct']:.0f}%",
            f"{row['server_cpu_us_per_request']:.0f}",
            ""
            if row["database_cpu_us_per_request"] is None
            else f"{row['database_cpu_us_per_request']:.0f}",
            str(errors) if errors else "",
        )
    console.print(table)
    console.print(
        "noop = GET /healthz, generate = POST /api/generate, status = GET /api/status; "
        "CPU = the server process on its core; DB CPU = PostgreSQL's processes"
    )
    _warn_socket_errors(data["results"])
    console.print(
        f"noop baseline (mean of start and end): {data['noop_baseline_rps']:.0f} req/s, "
        f"drift {data['noop_drift_pct']:+.1f}%"
    )
    for name, ratio in data["ratios"].items():
        mark = "[green]PASS[/green]" if ratio["pass"] else "[red]BELOW[/red]"
        console.print(f"{name}: {ratio['ratio']:.2f}x  (target >= {ratio['target']}x)  {mark}")


def _warn_socket_errors(results: dict[str, dict[str, Any]]) -> None:
    for field, row in results.items():
        errors = {kind: n for kind, n in row["socket_errors"].items() if n}
        if errors:
            console.print(f"[yellow]warning:[/yellow] {field}: wrk socket errors {errors}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=DESCRIPTION)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="open connections of wrk")
    parser.add_argument("--tasks", type=int, default=500, help="finished tasks status cycles on")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the engine the server runs on (postgresql: a new database, dropped afterwards)",
    )
    parser.add_argument(
        "--postgres-url", default=POSTGRES_URL, help="PostgreSQL to create the database on"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1 or args.tasks < 1:
        parser.error("--duration, --connections and --tasks must be at least 1")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Unwinds like Ctrl-C, so the `finally` blocks stop the server and remove the temp dir.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if shutil.which("wrk") is None:
        console.print(
            "[red]wrk is not installed.[/red] Install it (Debian/Ubuntu) with:\n"
            "    apt-get install -y wrk"
        )
        return 2
    if shutil.which("taskset") is None:
        console.print("[red]taskset is not installed[/red] (Debian/Ubuntu: package util-linux)")
        return 2
    try:
        check_cores()
        data = benchmark(args)
    except (BenchError, httpx.HTTPError) as exc:
        console.print(f"[red]benchmark failed:[/red] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]; the server and worker are stopped")
        return 130
    print_report(data)
    write_results(data, args.out)
    return 0


def write_results(data: dict[str, Any], out: Path | None) -> None:
    """Every figure, the settings and the machine as JSON, when asked for."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())

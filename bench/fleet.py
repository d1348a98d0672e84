"""A fleet on PostgreSQL: how fast a separate worker picks up new tasks, and how many
database connections it opens.

    .venv/bin/python -m bench.fleet [--rate 50] [--seconds 20] [--tasks 3000] [--out f.json]

Two `imagine serve --no-worker` processes and one `imagine worker` run on a new database
of the PostgreSQL at IMAGINE_TEST_POSTGRES (dropped afterwards).

Pickup: tasks are created at `--rate` per second, alternating between the two API
processes, for `--seconds`; the worker's submit stamps `checked_at` just before it
calls the provider, so `checked_at - created_at` is the time from the create's commit
to a worker holding the task. The preview engine takes 120 s per task here, so no later
look overwrites that stamp while the figures are read.

Connections: `--tasks` tasks (preview, no delay) go through the worker at its default
concurrency, and its `imagine_database_connections_opened_total` (from its
`--metrics-port`) is read before and after, past a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console

from bench.api import (
    MODEL,
    POSTGRES_URL,
    BenchError,
    Postgres,
    create_key,
    free_port,
    imagine,
    log_tail,
    machine_facts,
    running,
    service_env,
    wait_ready,
)

console = Console()
PICKUP_TARGET_MS = 100.0
CONNECTIONS_TARGET_PER_1000 = 5.0
WARMUP_TASKS = 300
ALL_CORES = None
"""The fleet shares both cores, as processes of one host do."""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _create_paced(urls: list[str], key: str, rate: float, seconds: float) -> list[str]:
    """Create tasks at `rate` per second for `seconds`, alternating between the API
    processes; each create is its own request, sent on schedule, not after the last."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "input": {"prompt": "pickup"}}
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(url: str) -> None:
            answer = await client.post(f"{url}/api/generate", json=body, headers=headers)
            answer.raise_for_status()
            ids.append(answer.json()["data"]["task_id"])

        sent: list[asyncio.Task[None]] = []
        start = time.monotonic()
        count = int(rate * seconds)
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
            sent.append(asyncio.create_task(one(urls[index % len(urls)])))
        await asyncio.gather(*sent)
    return ids


async def _create_many(url: str, key: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "input": {"prompt": "connections"}}
    ids: list[str] = []
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> None:
            async with limit:
                answer = await client.post(f"{url}/api/generate", json=body, headers=headers)
                answer.raise_for_status()
                ids.append(answer.json()["data"]["task_id"])

        await asyncio.gather(*(one() for _ in range(count)))
    return ids


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _wait_for(url: str, sql: str, want: int, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (row,) = asyncio.run(_fetch(url, sql))
        if int(row[0]) >= want:
            return
        time.sleep(0.5)
    raise BenchError(f"{what}: not reached within {timeout:.0f} s")


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    if found is None:
        raise BenchError(f"the worker's /metrics has no {name}")
    return float(found.group(1))


def pickup(args: argparse.Namespace, postgres: Postgres, root: Path) -> dict[str, Any]:
    admin = secrets.token_urlsafe(16)
    env = service_env(admin) | {
        "IMAGINE_DATABASE_URL": postgres.url.replace("postgresql://", "postgresql+asyncpg://"),
        "IMAGINE_PREVIEW_DELAY": "120",
        "IMAGINE_LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with (
        running(
            imagine("serve", "--no-worker", "--port", str(ports[0]), "--data-dir", str(root / "a")),
            core=ALL_CORES,
            env=env,
            log=root / "api-a.log",
        ) as first,
        httpx.Client(base_url=urls[0], timeout=30) as client,
    ):
        wait_ready(client, first, root / "api-a.log")
        with (
            running(
                imagine(
                    "serve", "--no-worker", "--port", str(ports[1]), "--data-dir", str(root / "b")
                ),
                core=ALL_CORES,
                env=env,
                log=root / "api-b.log",
            ) as second,
            httpx.Client(base_url=urls[1], timeout=30) as other,
            running(
                imagine("worker", "--data-dir", str(root / "w")),
                core=ALL_CORES,
                env=env,
                log=root / "worker.log",
            ) as worker,
        ):
            wait_ready(other, second, root / "api-b.log")
            key = create_key(client, admin)
            time.sleep(2)  # the worker is up and listening
            if worker.poll() is not None:
                raise BenchError(f"the worker exited:\n{log_tail(root / 'worker.log')}")
            console.print(f"pickup: {args.rate:g} tasks/s for {args.seconds:g} s")
            ids = asyncio.run(_create_paced(urls, key, args.rate, args.seconds))
            sent = "SELECT count(*) FROM tasks WHERE upstream_id IS NOT NULL"
            _wait_for(postgres.url, sent, len(ids), "every task picked up")
            rows = asyncio.run(
                _fetch(
                    postgres.url,
                    "SELECT extract(epoch FROM checked_at - created_at) FROM tasks",
                )
            )
    waits_ms = [1000 * float(row[0]) for row in rows]
    result = {
        "tasks": len(waits_ms),
        "rate_per_s": args.rate,
        "p50_ms": statistics.median(waits_ms),
        "p90_ms": _percentile(waits_ms, 0.90),
        "p99_ms": _percentile(waits_ms, 0.99),
        "max_ms": max(waits_ms),
        "target_p99_ms": PICKUP_TARGET_MS,
    }
    result["pass"] = result["p99_ms"] < PICKUP_TARGET_MS
    return result


def connections(args: argparse.Namespace, postgres: Postgres, root: Path) -> dict[str, Any]:
    admin = secrets.token_urlsafe(16)
    env = service_env(admin) | {
        "IMAGINE_DATABASE_URL": postgres.url.replace("postgresql://", "postgresql+asyncpg://"),
        "IMAGINE_PREVIEW_DELAY": "0",
    }
    port, metrics_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    worker_cmd = imagine("worker", "--data-dir", str(root / "cw"))
    worker_cmd += ["--metrics-port", str(metrics_port)]
    with (
        running(
            imagine("serve", "--no-worker", "--port", str(port), "--data-dir", str(root / "c")),
            core=ALL_CORES,
            env=env,
            log=root / "api-c.log",
        ) as api,
        httpx.Client(base_url=url, timeout=30) as client,
        running(worker_cmd, core=ALL_CORES, env=env, log=root / "worker-c.log"),
    ):
        wait_ready(client, api, root / "api-c.log")
        key = create_key(client, admin)
        done = "SELECT count(*) FROM tasks WHERE status = 'SUCCESS'"
        console.print(f"connections: {WARMUP_TASKS} tasks of warm-up, then {args.tasks}")
        asyncio.run(_create_many(url, key, WARMUP_TASKS))
        _wait_for(postgres.url, done, WARMUP_TASKS, "warm-up tasks finished")
        before = _metric(metrics_port, "imagine_database_connections_opened_total")
        started = time.monotonic()
        asyncio.run(_create_many(url, key, args.tasks))
        _wait_for(postgres.url, done, WARMUP_TASKS + args.tasks, "tasks finished")
        seconds = time.monotonic() - started
        after = _metric(metrics_port, "imagine_database_connections_opened_total")
    opened = after - before
    per_1000 = 1000 * opened / args.tasks
    return {
        "tasks": args.tasks,
        "seconds": round(seconds, 1),
        "connections_opened_at_warm_up": before,
        "connections_opened": opened,
        "per_1000_tasks": per_1000,
        "target_per_1000": CONNECTIONS_TARGET_PER_1000,
        "pass": per_1000 < CONNECTIONS_TARGET_PER_1000,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--rate", type=float, default=50, help="tasks per second for pickup")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of creating")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks for the connections")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    postgres = Postgres(args.postgres_url)
    postgres.create()
    try:
        with tempfile.TemporaryDirectory(prefix="imagine-fleet-") as tmp:
            root = Path(tmp)
            picked = pickup(args, postgres, root)
            postgres.drop()
            postgres.create()
            opened = connections(args, postgres, root)
    except (BenchError, httpx.HTTPError) as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    finally:
        postgres.drop()
    data = {"machine": machine_facts(), "pickup": picked, "connections": opened}
    console.print_json(json.dumps(data))
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fleet under load loses nothing when a worker process is killed: two API processes
and three workers on one PostgreSQL database, one bucket and one Redis take 2,000 tasks
from several accounts at once; one worker is killed with SIGKILL when a third have ended
(the last third are created after the kill), and the others take over its tasks once
their leases run out.

Every process runs the real CLI (`imagine serve --no-worker`, `imagine worker`) with a
data dir of its own; kie is the fake, calling back the first API process (signed), and a
known share of the prompts carries a marker that makes kie fail the task. Afterwards the
database, the fake's records, the API and the bucket are read to check the invariants.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.chaos.harness import FINAL, PRICES
from tests.support import databases
from tests.support.api import auth, new_key
from tests.support.databases import ledger_problems, query
from tests.support.fake_kie import FAILED_BY_FAULT, T2I, T2V, FakeKie
from tests.support.fleet import shared_redis
from tests.support.s3 import MotoServer
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.chaos

TASKS = 2000
ACCOUNTS = 4
CREDITS = 100_000
"""Each account's grant: more than its share of the tasks could cost."""
FAIL_MARKER = "[kie fails this]"
FAIL_EVERY = 9
"""Every ninth task's prompt carries FAIL_MARKER (9 and 25, prime to ACCOUNTS, spread the
failures and the videos over every account)."""
VIDEO_EVERY = 25
"""Every 25th task (of those not failing) is text-to-video; the rest text-to-image."""
SUBMITTERS = 8
"""Client threads creating tasks at once."""
WORKERS = 3
LEASE_SECONDS = 5
KILL_AT = TASKS // 3
"""A worker is killed once this many tasks have ended."""
AFTER_THE_KILL = TASKS * 2 // 3
"""Tasks from this number on are created only after the kill (on a small machine creating
takes most of the CPU, so a third may end only once most are created)."""
COMPARED_EVERY = 10
"""Every tenth result is compared byte for byte with its bucket object as well."""
FINAL_SQL = "SELECT COUNT(*) FROM tasks WHERE status IN ('SUCCESS', 'FAILED')"
TRIES = 3
"""Sends of one create (same Idempotency-Key) when the connection itself fails."""


def _plan(number: int) -> tuple[str, str]:
    """The model and prompt of task `number`."""
    if number % FAIL_EVERY == FAIL_EVERY - 1:
        return T2I, f"soak {number} {FAIL_MARKER}"
    return (T2V if number % VIDEO_EVERY == 0 else T2I), f"soak {number}"


class Submitters:
    """Client threads, each creating its stripe of the tasks through both API processes,
    from every account in turn."""

    def __init__(self, urls: list[str], keys: list[str]) -> None:
        self.urls = urls
        self.keys = keys
        self.created: dict[int, str] = {}
        """Task number -> our task id."""
        self.refused: list[str] = []
        """Every answer but 200, as `number: status body`."""
        self.resent = 0
        self.failure: BaseException | None = None
        self.go_on = threading.Event()
        """Set once the worker is killed: the rest of the tasks may be created."""
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(stripe,), daemon=True, name=f"soak-{stripe}")
            for stripe in range(SUBMITTERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self, stripe: int) -> None:
        try:
            clients = [httpx.Client(base_url=url, timeout=60) for url in self.urls]
            with contextlib.ExitStack() as stack:
                for client in clients:
                    stack.enter_context(client)
                for number in range(stripe, TASKS, SUBMITTERS):
                    if number >= AFTER_THE_KILL and not self.go_on.wait(timeout=600):
                        raise AssertionError("no kill came in 600 s")
                    # Half of each account's tasks go through each API process.
                    account = number % len(self.keys)
                    client = clients[(number // len(self.keys)) % len(clients)]
                    self._create(client, number, self.keys[account])
        except BaseException as exc:  # handed to the test, which raises it
            self.failure = exc

    def _create(self, client: httpx.Client, number: int, key: str) -> None:
        model, prompt = _plan(number)
        body = {"model": model, "input": {"prompt": prompt}}
        headers = {**auth(key), "Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(TRIES):
            try:
                answer = client.post("/api/generate", json=body, headers=headers)
            except httpx.TransportError:
                if attempt == TRIES - 1:
                    raise
                with self._lock:
                    self.resent += 1
                continue
            with self._lock:
                if answer.status_code == 200:
                    self.created[number] = answer.json()["data"]["task_id"]
                else:
                    self.refused.append(f"{number}: {answer.status_code} {answer.text[:300]}")
            return


def _count(database: str, sql: str) -> int:
    return int(query(database, sql)[0][0])


def _logs(processes: list[ServerProcess | WorkerProcess]) -> str:
    return "\n".join(f"--- {p.log_path.name}:\n{p.log()[-3000:]}" for p in processes)


def _still_running(
    processes: list[ServerProcess | WorkerProcess], everyone: list[ServerProcess | WorkerProcess]
) -> None:
    for process in processes:
        assert process.process is not None
        assert process.process.poll() is None, f"{process.log_path} exited:\n{_logs(everyone)}"


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with MotoServer(tmp_path / "moto.log") as running:
        yield running


@pytest.fixture
def postgres() -> Iterator[str]:
    url = databases.create_postgres_database()
    try:
        yield url
    finally:
        databases.drop_postgres_database(url)


@pytest.fixture
def redis_url() -> str:
    return shared_redis()


def test_a_fleet_loses_nothing_when_a_worker_is_killed_under_load(
    tmp_path: Path, redis_url: str, moto: MotoServer, postgres: str, figures: dict[str, Any]
) -> None:
    started = time.monotonic()
    bucket = moto.create_bucket()
    with contextlib.ExitStack() as stack:
        kie = stack.enter_context(
            FakeKie(task_seconds=0.5, latency=0.02, webhook_key="soak-webhook-key")
        )
        # A kie account of this test's own, so no other test shares its Redis budgets.
        kie.api_key = f"kie-soak-{uuid.uuid4().hex[:12]}"
        kie.fail_marker = FAIL_MARKER
        apis = [ServerProcess(tmp_path / f"api-{n}") for n in (1, 2)]
        env = kie_env(
            kie,
            **moto.env(bucket),
            IMAGINE_DATABASE_URL=databases.sqlalchemy_url(postgres),
            IMAGINE_REDIS_URL=redis_url,
            IMAGINE_PROVIDER="kie",
            IMAGINE_PUBLIC_URL=apis[0].url,
            IMAGINE_KIE_CREATE_RATE="5000/1s",
            IMAGINE_KIE_POLL_RATE="5000/1s",
            IMAGINE_WORKER_CONCURRENCY="32",
            IMAGINE_WORKER_POLL_INTERVAL="0.25",
            IMAGINE_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        for api in apis:
            api.env.update(env)
            api.no_worker = True
            stack.enter_context(api)  # one after the other: the first migrates
        workers = [
            stack.enter_context(WorkerProcess(tmp_path / f"worker-{n}", env))
            for n in range(1, WORKERS + 1)
        ]
        everyone: list[ServerProcess | WorkerProcess] = [*apis, *workers]
        keys = [new_key(apis[0].url, credits=CREDITS, name=f"soak {n}") for n in range(ACCOUNTS)]
        figures["seconds_to_start"] = round(time.monotonic() - started, 1)

        submitters = Submitters([api.url for api in apis], [key["key"] for key in keys])
        load_started = time.monotonic()
        submitters.start()

        # Kill one worker once a third have ended; its tasks wait out their lease.
        victim = workers[0]
        deadline = time.monotonic() + 600
        while _count(postgres, FINAL_SQL) < KILL_AT:
            assert submitters.failure is None, f"a client failed: {submitters.failure!r}"
            assert time.monotonic() < deadline, _logs(everyone)
            _still_running(everyone, everyone)
            time.sleep(0.2)
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        killed_at = time.monotonic()
        pid = victim.process.pid
        held = {
            str(task_id): upstream_id
            for task_id, upstream_id in query(
                postgres,
                "SELECT id, upstream_id FROM tasks WHERE status = 'IN_PROGRESS' "
                f"AND lease_owner LIKE '%:{pid}:%'",
            )
        }
        figures["at_the_kill"] = {
            "created": _count(postgres, "SELECT COUNT(*) FROM tasks"),
            "final": _count(postgres, FINAL_SQL),
            "held_by_the_killed_worker": len(held),
            "of_which_not_yet_submitted": sum(value is None for value in held.values()),
            "seconds_into_the_load": round(killed_at - load_started, 1),
        }
        submitters.go_on.set()
        assert held, "the killed worker held no task, so nothing was taken over"

        submitters.join(timeout=600)
        assert not submitters.alive(), "the clients did not finish creating in 600 s"
        assert submitters.failure is None, f"a client failed: {submitters.failure!r}"
        submitted = time.monotonic()
        assert submitters.refused == [], submitters.refused[:10]
        assert len(submitters.created) == TASKS

        # Every task ends; the two workers left take over the killed one's.
        deadline = time.monotonic() + 600
        while _count(postgres, "SELECT COUNT(*) FROM tasks WHERE status = 'IN_PROGRESS'"):
            _still_running([*apis, *workers[1:]], everyone)
            assert time.monotonic() < deadline, (
                f"tasks still IN_PROGRESS after 600 s:\n{_logs(everyone)}"
            )
            time.sleep(0.5)
        all_final = time.monotonic()

        task_ids = {task_id: number for number, task_id in submitters.created.items()}
        stored = {str(row[0]) for row in query(postgres, "SELECT id FROM tasks")}
        assert stored == set(task_ids), "the database holds other tasks than were acknowledged"

        # What the API says of each task, asked of the API process that did not make it.
        key_of = [key["key"] for key in keys]
        # One client for the many calls below (a client per call costs its TLS set-up).
        http = stack.enter_context(httpx.Client(timeout=60))

        def final_status(task_id: str) -> dict[str, Any]:
            number = task_ids[task_id]
            url = apis[1 - (number // ACCOUNTS) % 2].url
            answer = http.get(
                f"{url}/api/status",
                params={"task_id": task_id},
                headers=auth(key_of[number % ACCOUNTS]),
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            data: dict[str, Any] = answer.json()["data"]
            return data

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            final = dict(zip(task_ids, pool.map(final_status, task_ids), strict=True))

        by_status = Counter(str(data["status"]) for data in final.values())
        failing = {
            task_id for task_id, number in task_ids.items() if FAIL_MARKER in _plan(number)[1]
        }
        figures.update(
            {
                "tasks": len(task_ids),
                "tasks_by_status": dict(by_status),
                "failures_planned": len(failing),
                "accounts": ACCOUNTS,
                "api_processes": len(apis),
                "workers": WORKERS,
                "takeovers": len(held),
                "client_resends": submitters.resent,
                "upstream_creates": kie.calls["create"],
                "upstream_polls": kie.calls["poll"],
                "callbacks_sent": len(kie.callbacks_sent),
                "seconds_creating": round(submitted - load_started, 1),
                "seconds_until_all_final": round(all_final - load_started, 1),
                "seconds_from_kill_to_all_final": round(all_final - killed_at, 1),
            }
        )

        # Exactly the marked tasks failed, with kie's reason; nothing else did.
        assert all(data["status"] in FINAL for data in final.values())
        failed = {task_id for task_id, data in final.items() if data["status"] == "FAILED"}
        assert failed == failing, {
            "failed_unplanned": sorted(failed - failing)[:10],
            "succeeded_though_planned_to_fail": sorted(failing - failed)[:10],
            "errors": Counter(str(final[t]["error_message"]) for t in failed - failing),
        }
        for task_id in failed:
            assert FAILED_BY_FAULT[1] in str(final[task_id]["error_message"]), final[task_id]

        # Upstream: each task sent to kie once; twice only if the killed worker held it
        # without kie's answer stored (kie may have taken it just before the kill).
        creates = Counter(
            urlsplit(str(body.get("callBackUrl"))).path.split("/")[3] for body in kie.created_bodies
        )
        resubmitted = {task_id for task_id, count in creates.items() if count > 1}
        figures["resubmitted_after_the_kill"] = len(resubmitted)
        assert set(creates) == set(task_ids)
        lost_answer = {task_id for task_id, upstream_id in held.items() if upstream_id is None}
        assert resubmitted <= lost_answer, {t: creates[t] for t in resubmitted - lost_answer}
        assert max(creates.values()) <= 2, creates.most_common(3)
        assert len(kie.callbacks_sent) >= TASKS
        # The first API process took every callback that reached it; a callback that got
        # nowhere (the fake's own connection pool ran out) was made up for by a poll.
        callbacks = Counter(status for _, status in kie.callbacks_sent)
        unanswered = [kie_id for kie_id, status in kie.callbacks_sent if status == 0]
        figures["callbacks"] = {"answered": dict(callbacks), "errors": dict(kie.callback_errors)}
        assert set(callbacks) <= {200, 0}, figures["callbacks"]
        unpolled = [kie_id for kie_id in unanswered if kie.polls_by_task[kie_id] == 0]
        assert unpolled == [], f"{len(unpolled)} tasks whose callback was lost were never polled"

        # Money: the ledger holds, each failure refunded once, the balance what was spent.
        assert ledger_problems(postgres) == []
        spent: Counter[str] = Counter()
        for task_id, data in final.items():
            number = task_ids[task_id]
            model = _plan(number)[0]
            if data["status"] == "SUCCESS":
                assert data["consumed_credits"] == PRICES[model], data
                spent[key_of[number % ACCOUNTS]] += PRICES[model]
            else:
                assert data["consumed_credits"] == 0, data
        refunds = Counter(
            str(row[0])
            for row in query(postgres, "SELECT task_id FROM ledger WHERE kind = 'refund'")
        )
        assert set(refunds) == failed
        assert set(refunds.values()) == {1}
        for key in keys:
            account = key["account_id"]
            ledger = _count(
                postgres,
                f"SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account_id = '{account}'",
            )
            assert ledger == CREDITS - spent[key["key"]]
            for api in apis:
                answer = httpx.get(f"{api.url}/api/credits", headers=auth(key["key"]), timeout=30)
                assert answer.status_code == 200, answer.text
                assert answer.json()["data"]["balance"] == ledger

        # Every result is served by both API processes: kie's bytes, as big as the bucket
        # object (and every tenth compared with the object itself).
        in_bucket = moto.sizes(bucket, "results/")
        upstream: dict[str, set[bytes]] = {}
        for kie_task in list(kie.tasks.values()):
            ours = urlsplit(str(kie_task.callback_url)).path.split("/")[3]
            for result in kie_task.result_urls:
                name = urlsplit(result).path.rsplit("/", 1)[1]
                upstream.setdefault(ours, set()).add(kie.result_files[name][0])

        def check_results(task_id: str) -> int:
            data = final[task_id]
            video = _plan(task_ids[task_id])[0] == T2V
            served = 0
            for url in data["response"]["resultUrls"]:
                path = urlsplit(url).path
                assert url == f"{apis[0].url}{path}"
                assert path.startswith(f"/files/{task_id}/")
                key = "results/" + path.removeprefix("/files/")
                compared = task_ids[task_id] % COMPARED_EVERY == 0
                stored = moto.object(bucket, key)[0] if compared else None
                for api in apis:
                    answer = http.get(f"{api.url}{path}")
                    assert answer.status_code == 200, (api.url, path, answer.text[:300])
                    kind = answer.headers["content-type"]
                    assert kind == ("video/mp4" if video else "image/png"), (url, kind)
                    assert answer.content in upstream[task_id], (api.url, path)
                    assert len(answer.content) == in_bucket[key] > 0, (api.url, path)
                    assert stored is None or answer.content == stored, (api.url, path)
                    served += 1
            assert served, data
            return served

        succeeded = [task_id for task_id, data in final.items() if data["status"] == "SUCCESS"]
        checked = time.monotonic()
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            figures["result_downloads"] = sum(pool.map(check_results, succeeded))
        figures["seconds_checking_results"] = round(time.monotonic() - checked, 1)

        figures["errors_logged"] = {
            process.log_path.parent.name: process.log().count("Traceback") for process in everyone
        }
        # asyncpg's warning for a connection handed back mid-transaction (a write that
        # was cancelled halfway): harmless, it rolls back, but counted.
        figures["connections_reset_mid_transaction"] = sum(
            process.log().count("Resetting connection with an active transaction")
            for process in everyone
        )
        figures["seconds"] = round(time.monotonic() - started, 1)
        assert not any(figures["errors_logged"].values()), _logs(everyone)

"""A server killed with SIGKILL over and over, while a client keeps creating tasks,
loses nothing it acknowledged, charges nothing twice and pays upstream only once.

A client thread creates tasks through HTTP without pause (each request carries an
Idempotency-Key and is retried with it until it is answered, as a careful client does).
The server runs on kie (the fake, three seconds per task, some tasks failing upstream) and
is killed, process group and all, at random moments, once while it is still starting up,
and started again on the same data dir and port. Then the last server finishes every
task, and the database and the fake are read to check the invariants.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.chaos.harness import FINAL, PRICES, CrashableServer, wait_all_final
from tests.support.api import auth, new_key
from tests.support.databases import ledger_problems, query
from tests.support.fake_kie import FAILED_BY_FAULT, FakeKie
from tests.support.upstreams import kie_env

pytestmark = pytest.mark.chaos

KILLS = 6
"""At least this many kills: KILLS - 1 of a running server, and one (or more, should the
server be up sooner than the previous start took) during start-up."""
STARTUP_KILL = 2
"""After which kill of a running server the next one is killed while it starts (after
spawn, before /healthz answers)."""
MOST_TASKS = 200
"""The client stops creating after this many, whatever happens."""
CREDITS = 100_000
UPTIME = (1.0, 4.0)
"""Seconds a server runs after it answers, before it is killed (drawn at random)."""
MODELS = ("grok-imagine/text-to-image", "grok-imagine/text-to-video")


@pytest.fixture
def kie() -> Iterator[FakeKie]:
    with FakeKie(task_seconds=3, callbacks=False) as fake:
        yield fake


class Client(threading.Thread):
    """Creates tasks one after another until told to stop; each request is retried with
    its Idempotency-Key until it gets an answer."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True, name="chaos-client")
        self.url = url
        self.key = key
        self.stop_creating = threading.Event()
        self.acknowledged: dict[str, tuple[str, str]] = {}
        """prompt -> (task id, model), for every 200 answer."""
        self.replayed = 0
        self.retries: Counter[str] = Counter()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._create_until_stopped()
        except BaseException as exc:  # handed to the test, which raises it
            self.failure = exc

    def _create_until_stopped(self) -> None:
        with httpx.Client(base_url=self.url, headers=auth(self.key), timeout=10) as http:
            number = 0
            while not self.stop_creating.is_set() and number < MOST_TASKS:
                model = MODELS[number % 3 == 2]
                prompt = f"crash loop {number}"
                body = {"model": model, "input": {"prompt": prompt}}
                task_id = self._create(http, body, str(uuid.uuid4()))
                self.acknowledged[prompt] = (task_id, model)
                number += 1
                time.sleep(0.25)

    def _create(self, http: httpx.Client, body: dict[str, Any], idempotency_key: str) -> str:
        given_up = time.monotonic() + 300
        while True:
            try:
                answer = http.post(
                    "/api/generate", json=body, headers={"Idempotency-Key": idempotency_key}
                )
            except httpx.HTTPError as exc:
                self.retries[type(exc).__name__] += 1
            else:
                if answer.status_code == 200:
                    if answer.headers.get("idempotent-replayed") == "true":
                        self.replayed += 1
                    task_id: str = answer.json()["data"]["task_id"]
                    return task_id
                if answer.status_code not in (500, 502, 503):
                    raise AssertionError(f"generate answered {answer.status_code}: {answer.text}")
                self.retries[str(answer.status_code)] += 1
            if time.monotonic() > given_up:
                raise AssertionError("generate got no answer for 300 s")
            time.sleep(0.2)


def _unsubmitted(database: Path) -> set[str]:
    """Tasks whose upstream id is not stored: a new process will submit them."""
    rows = query(
        database,
        "SELECT id FROM tasks WHERE status = 'IN_PROGRESS' AND upstream_id IS NULL",
    )
    return {str(row[0]) for row in rows}


def _kill_during_startup(
    server: CrashableServer,
    startup_seconds: float,
    draw: random.Random,
    after_each: Callable[[], None],
) -> list[dict[str, Any]]:
    """Spawn the server and kill it before /healthz answers, at a random point of its
    start-up (as long as the previous start took); when it was up already, that was a
    kill while running, and it is tried again earlier."""
    kills: list[dict[str, Any]] = []
    share = 0.9
    while len(kills) < 4:
        server.spawn()
        spawned = time.monotonic()
        time.sleep(draw.uniform(0.3, share) * startup_seconds)
        up = server.answering()
        server.crash()
        after_each()
        kills.append(
            {
                "when": "running" if up else "startup",
                "after_spawn_s": round(time.monotonic() - spawned, 2),
            }
        )
        if not up:
            break
        share /= 2
    return kills


def test_a_server_killed_again_and_again_loses_nothing(
    tmp_path: Path, kie: FakeKie, figures: dict[str, Any]
) -> None:
    seed = int(os.environ.get("IMAGINE_CHAOS_SEED", random.randrange(1 << 30)))
    draw = random.Random(seed)
    kie.random.seed(seed)
    kie.task_faults = {"fail": 0.15}
    figures["seed"] = seed
    env = kie_env(
        kie,
        IMAGINE_PROVIDER="kie",
        IMAGINE_LEASE_SECONDS="2",
        IMAGINE_KIE_CREATE_RATE="50/1s",
        IMAGINE_KIE_POLL_RATE="50/1s",
    )
    data_dir = tmp_path / "data"
    database = data_dir / "imagine.db"
    server = CrashableServer(data_dir, env)
    test_started = started = time.monotonic()
    server.start()
    startup_seconds = time.monotonic() - started
    key = new_key(server.url, credits=CREDITS)["key"]
    client = Client(server.url, key)
    client.start()

    kill_log: list[dict[str, Any]] = []
    # A task may reach kie twice only when a kill came after kie took it and before the
    # server stored kie's answer. After each kill, with the process gone: the tasks whose
    # upstream id is not stored (a new process submits them again), and of those the ones
    # kie already has.
    lost_answers: Counter[str] = Counter()

    def count_lost_answers() -> None:
        unsubmitted = _unsubmitted(database)
        barrier = httpx.get(f"{kie.url}/api/v1/chat/credit", headers=auth(kie.api_key))
        assert barrier.status_code == 200  # the fake has handled what came before it
        sent = {prompt for _, prompt, _ in kie.task_log}
        for task_id, request in query(database, "SELECT id, request FROM tasks"):
            prompt = str(orjson.loads(request)["input"]["prompt"])
            if str(task_id) in unsubmitted and prompt in sent:
                lost_answers[prompt] += 1

    try:
        for number in range(KILLS - 1):
            uptime = draw.uniform(*UPTIME)
            time.sleep(uptime)
            server.crash()
            kill_log.append({"when": "running", "uptime_s": round(uptime, 2)})
            count_lost_answers()
            if number == STARTUP_KILL:
                kill_log += _kill_during_startup(server, startup_seconds, draw, count_lost_answers)
            started = time.monotonic()
            server.spawn()
            server.wait_answering()
            startup_seconds = time.monotonic() - started
        time.sleep(draw.uniform(*UPTIME))  # the last server takes tasks for a while too
    finally:
        client.stop_creating.set()
        client.join(timeout=360)
    try:
        assert client.failure is None, f"the client failed: {client.failure!r}"
        assert not client.is_alive()
        acknowledged = dict(client.acknowledged.values())
        final = wait_all_final(server.url, key, acknowledged, timeout=180)
        balance = httpx.get(f"{server.url}/api/credits", headers=auth(key), timeout=30)
        assert balance.status_code == 200, balance.text
    finally:
        server.stop()

    kills = Counter(str(kill["when"]) for kill in kill_log)
    prompt_of = {task_id: prompt for prompt, (task_id, _) in client.acknowledged.items()}
    by_status = Counter(str(data["status"]) for data in final.values())
    upstream_creates = Counter(prompt for _, prompt, _ in kie.task_log)
    last_fault = {prompt: fault for _, prompt, fault in kie.task_log}
    figures.update(
        {
            "tasks_acknowledged": len(acknowledged),
            "kills": dict(kills),
            "kill_log": kill_log,
            "client_retries": dict(client.retries),
            "idempotent_replays": client.replayed,
            "tasks_by_status": dict(by_status),
            "upstream_creates": kie.calls["create"],
            "upstream_polls": kie.calls["poll"],
            "upstream_failed_by_fault": kie.faults_injected["task:fail"],
            "resubmitted_after_a_lost_answer": sum(lost_answers.values()),
            "seconds": round(time.monotonic() - test_started, 1),
        }
    )

    assert sum(kills.values()) >= KILLS
    assert kills["startup"] >= 1, "no kill came during start-up"
    assert len(acknowledged) > KILLS, "the client got too few tasks in to prove anything"

    # Every acknowledged task exists and has ended; nothing else was created.
    unfinished = sorted(
        task_id for task_id in acknowledged if final.get(task_id, {}).get("status") not in FINAL
    )
    assert not unfinished, f"{len(unfinished)} acknowledged tasks did not end: {unfinished[:5]}"
    assert {str(row[0]) for row in query(database, "SELECT id FROM tasks")} == set(acknowledged)

    # Money: charged once, refunded once exactly for the failures, balance = ledger.
    assert ledger_problems(database) == []
    spent = 0
    for task_id, data in final.items():
        model = acknowledged[task_id]
        fault = last_fault.get(prompt_of[task_id])
        if data["status"] == "SUCCESS":
            assert fault is None, data
            assert data["consumed_credits"] == PRICES[model], data
            assert data["response"]["resultUrls"], data
            spent += PRICES[model]
        else:
            # The only failures here are the ones the fake made upstream.
            assert fault == "fail", data
            assert FAILED_BY_FAULT[1] in str(data["error_message"]), data
            assert data["consumed_credits"] == 0, data
    assert balance.json()["data"]["balance"] == CREDITS - spent

    # Upstream: each task was sent to kie once, or once more for each kill that came
    # between kie taking it and the server storing kie's answer.
    for prompt, (task_id, _) in client.acknowledged.items():
        assert upstream_creates[prompt] == 1 + lost_answers[prompt], (
            f"task {task_id} ({prompt!r}) was created upstream {upstream_creates[prompt]} "
            f"times, {lost_answers[prompt]} of them after a kill had lost kie's answer"
        )

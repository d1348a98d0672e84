"""Upstream call budgets shared through Redis: processes that call one provider account
stay inside its limits together, accounts and operations have budgets of their own, and a
Redis outage falls back to per-process budgets and recovers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path

import pytest
import redis

from imagine.providers.shared_budget import SharedBudget
from tests.support.api import create_task, new_key, status, text_to_image
from tests.support.databases import query
from tests.support.fake_kie import FakeKie
from tests.support.fleet import RedisServer, shared_redis
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env, most_in_any_window
from tests.support.worker import WorkerProcess

DISPATCH_SLACK = 0.25
"""Seconds between Redis granting a call and the caller noting it, at most (a loaded
machine). A call granted at t is noted in [t, t + slack], so any window of length
`window - slack` of the noted times holds only calls granted within one budget window."""


def account() -> str:
    return "test-" + secrets.token_hex(6)


def test_two_processes_budgets_on_one_redis_keep_the_combined_rate() -> None:
    url = shared_redis()
    calls, window = 4, 1.0
    shared = account()
    granted: list[float] = []

    async def caller(budget: SharedBudget) -> None:
        await budget.acquire("create")
        granted.append(time.monotonic())

    async def fleet() -> None:
        # Two budgets, each with its own connection, as two processes would have them.
        budgets = [SharedBudget(url, "kie", shared, {"create": (calls, window)}) for _ in "ab"]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(caller(budget) for budget in budgets for _ in range(8))),
                timeout=120,
            )
        finally:
            for budget in budgets:
                await budget.aclose()

    asyncio.run(fleet())
    # Every call went (a budget waits, it never refuses), and together never faster than
    # the one budget allows.
    assert len(granted) == 16
    assert most_in_any_window(granted, window - DISPATCH_SLACK) <= calls


def test_accounts_and_operations_have_budgets_of_their_own() -> None:
    url = shared_redis()
    rates = {"create": (2, 600.0), "poll": (2, 600.0)}

    async def spend() -> None:
        budgets = [SharedBudget(url, "kie", account(), rates) for _ in "ab"]
        try:
            # Were any two of these one budget, the second pair would wait ten minutes.
            async with asyncio.timeout(60):
                for budget in budgets:
                    for operation in ("create", "create", "poll", "poll", "account"):
                        await budget.acquire(operation)
        finally:
            for budget in budgets:
                await budget.aclose()

    asyncio.run(spend())


def _calls_recorded(url: str, key: str) -> int:
    with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
        return int(client.llen(key))


def test_a_redis_outage_falls_back_to_the_process_budget_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="imagine.providers.budget")
    first = RedisServer(tmp_path / "redis").start()
    who = account()
    key = f"imagine:budget:kie:{who}:create"

    def warnings(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    async def through_an_outage() -> None:
        budget = SharedBudget(first.url, "kie", who, {"create": (1000, 1.0)})
        try:
            await budget.acquire("create")
            assert _calls_recorded(first.url, key) == 1
            first.stop()
            # Calls still go, on this process's own budget, with one warning for it all.
            async with asyncio.timeout(60):
                for _ in range(5):
                    await budget.acquire("create")
            assert warnings("is unreachable") == 1
            again = RedisServer(tmp_path / "redis", port=first.port).start()
            try:
                deadline = time.monotonic() + 60
                while _calls_recorded(again.url, key) == 0:
                    assert time.monotonic() < deadline, "the budget never went back to Redis"
                    await budget.acquire("create")
                    await asyncio.sleep(0.1)
                assert warnings("shares it again") == 1
                assert warnings("is unreachable") == 1
            finally:
                again.stop()
        finally:
            await budget.aclose()
            first.stop()

    asyncio.run(through_an_outage())


FLEET_SLACK = 0.5
"""As DISPATCH_SLACK, for a call that goes from a worker process over HTTP to the fake."""


def test_a_fleet_of_workers_keeps_one_create_budget_for_the_kie_account(
    tmp_path: Path,
) -> None:
    url = shared_redis()
    calls, window = 3, 2.0
    data_dir = tmp_path / "fleet"
    with FakeKie(task_seconds=0.5, callbacks=False) as kie:
        # An account of this test's own, so no other test's calls share its budget.
        kie.api_key = "kie-fleet-" + secrets.token_hex(6)
        env = kie_env(
            kie,
            IMAGINE_PROVIDER="kie",
            IMAGINE_REDIS_URL=url,
            IMAGINE_KIE_CREATE_RATE=f"{calls}/{window}s",
            IMAGINE_KIE_POLL_RATE="20/1s",
            IMAGINE_WORKER_CONCURRENCY="4",
        )
        api = ServerProcess(data_dir, env)
        api.no_worker = True
        api.start()
        workers = [WorkerProcess(data_dir, api.env) for _ in "ab"]
        try:
            for worker in workers:
                worker.start()
            key = new_key(api.url)["key"]
            ids = [create_task(api.url, key, text_to_image(f"fleet {n}")) for n in range(12)]
            unfinished = "SELECT COUNT(*) FROM tasks WHERE status = 'IN_PROGRESS'"
            deadline = time.monotonic() + 240
            while query(api.database, unfinished) != [(0,)]:
                for worker in workers:
                    assert worker.running(), worker.log()
                assert time.monotonic() < deadline, [worker.log() for worker in workers]
                time.sleep(0.5)
            for task_id in ids:
                data = status(api.url, key, task_id).json()["data"]
                assert data["status"] == "SUCCESS", data
            assert kie.calls["create"] == 12
            # Both workers together, never more creates than the budget in any window.
            assert most_in_any_window(kie.call_times["create"], window - FLEET_SLACK) <= calls
            for worker in workers:
                assert "unreachable" not in worker.log()
        finally:
            for worker in workers:
                worker.stop()
            api.stop()

"""Polling is a budget: clients that poll us hard don't turn into upstream calls, the
upstream's rate limits are kept, and many tasks are polled at once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.fake_kie import FakeKie
from tests.support.upstreams import kie_env, most_in_any_window, start_server


def test_a_client_polling_at_10_hz_costs_one_upstream_poll_per_refresh_interval(
    tmp_path: Path,
) -> None:
    refresh_interval = 1.0
    with FakeKie(task_seconds=15, callbacks=False) as kie:
        env = kie_env(
            kie, IMAGINE_PROVIDER="kie", IMAGINE_STATUS_REFRESH_INTERVAL=str(refresh_interval)
        )
        server = start_server(tmp_path / "budget", env, public=False)
        try:
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, text_to_image("slow upstream"))
            requests, seen = 0, "IN_PROGRESS"
            started = time.monotonic()
            with httpx.Client(base_url=server.url, headers=auth(key)) as client:
                while time.monotonic() - started < 20:
                    answer = client.get("/api/status", params={"task_id": task_id})
                    requests += 1
                    seen = answer.json()["data"]["status"]
                    time.sleep(0.1)
            assert seen == "SUCCESS"
            assert requests >= 150
            (upstream,) = kie.tasks.values()
            polls = kie.polls_by_task[upstream.id]
            # At most one upstream call per refresh interval while the task ran upstream
            # (15 s), plus the one that saw it finished.
            assert 1 <= polls <= 15 / refresh_interval + 1
            assert kie.calls["create"] == 1
        finally:
            server.stop()


def test_upstream_rate_limits_are_kept_and_tasks_are_polled_concurrently(
    tmp_path: Path,
) -> None:
    with FakeKie(task_seconds=3, callbacks=False, latency=0.3) as kie:
        env = kie_env(
            kie,
            IMAGINE_PROVIDER="kie",
            IMAGINE_KIE_CREATE_RATE="3/1s",
            IMAGINE_KIE_POLL_RATE="4/1s",
            IMAGINE_WORKER_CONCURRENCY="32",
        )
        server = start_server(tmp_path / "limits", env, public=False)
        try:
            key = new_key(server.url)["key"]
            ids = [create_task(server.url, key, text_to_image(f"task {n}")) for n in range(12)]
            for task_id in ids:
                # Waiting quietly: the limits are about the worker's own calls.
                deadline = time.monotonic() + 90
                while True:
                    data = httpx.get(
                        f"{server.url}/api/status", params={"task_id": task_id}, headers=auth(key)
                    ).json()["data"]
                    if data["status"] != "IN_PROGRESS" or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                assert data["status"] == "SUCCESS", data
            # A leaky bucket lets a full bucket through, then the rate: any one second sees
            # at most twice the rate.
            assert most_in_any_window(kie.call_times["create"], 1.0) <= 2 * 3
            assert most_in_any_window(kie.call_times["poll"], 1.0) <= 2 * 4
            assert kie.calls["create"] == 12
            # Polls overlap: the worker never polls one task at a time.
            assert kie.most_in_flight["poll"] > 1
        finally:
            server.stop()


def test_signed_callbacks_replace_polling(tmp_path: Path) -> None:
    with FakeKie(task_seconds=1, webhook_key="signing-key") as kie:
        server = start_server(tmp_path / "callbacks", kie_env(kie, IMAGINE_PROVIDER="kie"))
        try:
            key = new_key(server.url)["key"]
            ids = [create_task(server.url, key, text_to_image(f"cb {n}")) for n in range(10)]
            # The client only looks once every callback has been taken.
            deadline = time.monotonic() + 120
            while len(kie.callbacks_sent) < 10:
                assert time.monotonic() < deadline, "kie sent no callbacks"
                time.sleep(0.1)
            for task_id in ids:
                assert wait_done(server.url, key, task_id)["status"] == "SUCCESS"
            assert kie.calls["create"] == 10
            assert len(kie.callbacks_sent) == 10
            assert kie.calls["poll"] == 0
        finally:
            server.stop()

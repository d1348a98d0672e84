"""A fleet's metrics: `imagine worker --metrics-port` beside `serve --no-worker` on one
database. The queue gauges count what is due, the histograms and the webhook counter
move as work is done, and the worker's port answers /healthz and /readyz."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.fake_kie import FakeKie
from tests.support.receiver import receiver
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env, metric, start_server
from tests.support.worker import WorkerProcess

FLEET_ENV = {"IMAGINE_ALLOW_PRIVATE_URLS": "true", "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "1s,1s"}
MODEL = "grok-imagine/text-to-image"


def _eventually(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def _set_revision(database: Path, revision: str) -> None:
    with closing(sqlite3.connect(database)) as conn, conn:  # closed, and committed
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_gauges_show_due_work_and_a_worker_drains_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "fleet"
    api = ServerProcess(data_dir, FLEET_ENV)
    api.no_worker = True
    with api, receiver(answers=(500,)) as hook:
        key = new_key(api.url)["key"]
        body = {**text_to_image("gauges"), "callback_url": hook.url}
        tasks = [create_task(api.url, key, body) for _ in range(3)]
        cancelled = create_task(api.url, key, body)
        answer = httpx.post(f"{api.url}/api/cancel", json={"task_id": cancelled}, headers=auth(key))
        assert answer.status_code == 200, answer.text

        # No worker: the three tasks wait, and the cancel's webhook waits for a sender.
        _eventually(lambda: metric(api, "imagine_tasks_due") == 3)
        assert metric(api, "imagine_webhook_backlog") == 1
        _eventually(lambda: metric(api, "imagine_oldest_due_task_seconds") > 0)

        with WorkerProcess(data_dir, api.worker_env()) as worker:
            _eventually(lambda: metric(worker, "imagine_tasks_due") == 0)
            _eventually(
                lambda: (
                    metric(
                        worker,
                        "imagine_task_duration_seconds_count",
                        model=MODEL,
                        provider="preview",
                    )
                    == 3
                )
            )
            for task_id in tasks:
                assert wait_done(api.url, key, task_id)["status"] == "SUCCESS"
            # The first delivery was answered 500 and retried a second later.
            _eventually(
                lambda: metric(worker, "imagine_webhook_deliveries_total", outcome="delivered") == 4
            )
            assert metric(worker, "imagine_webhook_deliveries_total", outcome="retry") == 1
            assert metric(worker, "imagine_webhook_backlog") == 0
            assert metric(worker, "imagine_oldest_due_task_seconds") == 0
            assert len(hook.received) == 5
            # Seconds from creation to the end: each took at least the preview's 0.2 s.
            labels = {"model": MODEL, "provider": "preview"}
            total = metric(worker, "imagine_task_duration_seconds_sum", **labels)
            assert total >= 3 * 0.2


def test_the_workers_port_answers_health_and_readiness(tmp_path: Path) -> None:
    data_dir = tmp_path / "worker"
    with WorkerProcess(data_dir) as worker:
        health = httpx.get(f"{worker.url}/healthz")
        assert health.status_code == 200
        assert health.json() == {"code": 200, "message": "success", "data": {"status": "ok"}}
        ready = httpx.get(f"{worker.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["data"] == {"status": "ready"}

        # A schema another version moved back (or a restore of an old backup): not ready.
        _set_revision(data_dir / "imagine.db", "0005")
        behind = httpx.get(f"{worker.url}/readyz")
        assert behind.status_code == 503
        assert behind.json()["data"] is None
        assert "revision 0005" in behind.json()["message"]
        assert "imagine db upgrade" in behind.json()["message"]
        assert httpx.get(f"{worker.url}/healthz").status_code == 200

        missing = httpx.get(f"{worker.url}/nothing")
        assert missing.status_code == 404
        assert missing.json()["code"] == 404


def test_upstream_calls_are_timed_by_provider_and_operation(tmp_path: Path) -> None:
    with FakeKie(task_seconds=0.3) as kie:
        server = start_server(tmp_path / "kie", kie_env(kie, IMAGINE_PROVIDER="kie"))
        try:
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, text_to_image("timed"))
            assert wait_done(server.url, key, task_id)["status"] == "SUCCESS"
            count = metric(
                server, "imagine_upstream_call_seconds_count", provider="kie", operation="create"
            )
            assert count >= 1
            assert (
                metric(
                    server,
                    "imagine_upstream_call_seconds_bucket",
                    provider="kie",
                    operation="create",
                    le="+Inf",
                )
                == count
            )
        finally:
            server.stop()

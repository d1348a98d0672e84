"""A task's deadline bounds everything done for it: past it the task is final, refunded
and its webhook queued, whatever step it was in (here: copying a result that trickles)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import orjson

from tests.support.api import balance, create_task, new_key, text_to_image, wait_done
from tests.support.fake_kie import FakeKie
from tests.support.receiver import receiver
from tests.support.upstreams import kie_env, start_server

DEADLINE = 10
SLACK = 20
"""Seconds the server may take past the deadline to end a task. It is a property of the
server, read from its own timestamps; a step bounded only by the old 10-minute step
timeout would blow through it."""


def _seconds(data: dict[str, object]) -> float:
    created = datetime.fromisoformat(str(data["created_at"]))
    completed = datetime.fromisoformat(str(data["completed_at"]))
    return (completed - created).total_seconds()


def test_a_result_that_trickles_ends_at_the_deadline(tmp_path: Path) -> None:
    with FakeKie(task_seconds=0.2, callbacks=False) as kie:
        kie.trickle_seconds = 1.0
        kie.next_task_faults.append("trickle")
        env = kie_env(
            kie,
            IMAGINE_PROVIDER="kie",
            IMAGINE_TASK_DEADLINE=str(DEADLINE),
            # No minimum rate: only the deadline may end this copy.
            IMAGINE_DOWNLOAD_MIN_RATE="0",
            IMAGINE_ALLOW_PRIVATE_URLS="true",  # the webhook receiver is on loopback
            IMAGINE_WEBHOOK_RETRY_SCHEDULE="1s",
        )
        server = start_server(tmp_path / "deadline", env, public=False)
        try:
            key = new_key(server.url, credits=100)["key"]
            with receiver() as hook:
                body = {**text_to_image("slow result"), "callback_url": hook.url}
                task_id = create_task(server.url, key, body)
                data = wait_done(server.url, key, task_id, timeout=300)
                deadline = time.monotonic() + 120
                while not hook.received:
                    assert time.monotonic() < deadline, "the webhook never came"
                    time.sleep(0.1)
            assert kie.faults_injected["task:trickle"] == 1
            assert data["status"] == "FAILED"
            assert data["error_message"] == f"the task did not finish within {DEADLINE} seconds"
            assert data["consumed_credits"] == 0
            assert _seconds(data) < DEADLINE + SLACK
            assert balance(server.url, key) == 100
            sent = orjson.loads(hook.received[0].body)["data"]
            assert sent["task_id"] == task_id
            assert sent["status"] == "FAILED"
        finally:
            server.stop()

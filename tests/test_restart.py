"""Nothing acknowledged is lost: a server killed with SIGKILL picks every task up again."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import balance, create_task, new_key, wait_done
from tests.support.databases import ledger_problems, query
from tests.support.server import ServerProcess

ENV = {"IMAGINE_PREVIEW_DELAY": "1.5", "IMAGINE_LEASE_SECONDS": "2"}
BODIES = [
    {"model": "grok-imagine/text-to-image", "input": {"prompt": "one"}},
    {"model": "grok-imagine/text-to-video", "input": {"prompt": "two"}},
    {"model": "grok-imagine/text-to-image", "input": {"prompt": "three"}},
]


def test_tasks_in_flight_finish_after_a_kill(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "data", ENV).start()
    key = new_key(first.url, credits=1000)["key"]
    acknowledged = [create_task(first.url, key, BODIES[i % 3]) for i in range(18)]
    spent = sum(5 if i % 3 != 1 else 24 for i in range(18))
    first.kill()

    database = first.database
    unfinished = query(database, "SELECT COUNT(*) FROM tasks WHERE status = 'IN_PROGRESS'")
    assert unfinished[0][0] > 0, "the kill came too late to prove anything"

    with ServerProcess(tmp_path / "data", ENV, port=first.port) as second:
        results = [wait_done(second.url, key, task_id, timeout=90) for task_id in acknowledged]
        assert [data["status"] for data in results] == ["SUCCESS"] * len(acknowledged)
        assert balance(second.url, key) == 1000 - spent
    assert ledger_problems(database) == []
    # No task was submitted to its provider twice over: one upstream id each, all set.
    assert query(database, "SELECT COUNT(*) FROM tasks WHERE upstream_id IS NULL") == [(0,)]


def test_killed_during_claims_with_the_worker_busy(tmp_path: Path) -> None:
    """Kill while the worker holds leases (no delay: tasks are mid-render); the new
    process waits out the dead leases and finishes everything."""
    env = {"IMAGINE_PREVIEW_DELAY": "0", "IMAGINE_LEASE_SECONDS": "2"}
    first = ServerProcess(tmp_path / "busy", env).start()
    key = new_key(first.url, credits=1000)["key"]
    acknowledged = [
        create_task(
            first.url, key, {"model": "grok-imagine/text-to-video", "input": {"prompt": str(i)}}
        )
        for i in range(12)
    ]
    first.kill()
    unfinished = query(first.database, "SELECT COUNT(*) FROM tasks WHERE status = 'IN_PROGRESS'")
    assert unfinished[0][0] > 0, "the kill came too late to prove anything"
    with ServerProcess(tmp_path / "busy", env, port=first.port) as second:
        for task_id in acknowledged:
            assert wait_done(second.url, key, task_id, timeout=120)["status"] == "SUCCESS"
    assert ledger_problems(first.database) == []

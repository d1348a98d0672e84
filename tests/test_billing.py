"""Credits: charged once at creation, refunded once on failure, never overspent."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import auth, balance, create_task, new_key, text_to_image, wait_done
from tests.support.databases import ledger_problems, query
from tests.support.images import image_server
from tests.support.names import name_resolving_to_loopback
from tests.support.server import ServerProcess


async def _burst(url: str, key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post("/api/generate", json=text_to_image(f"p{i}"), headers=auth(key))
                for i in range(count)
            )
        )


def test_concurrent_generates_never_overspend(
    engine_server: tuple[ServerProcess, str | Path],
) -> None:
    server, database = engine_server
    created = new_key(server.url, credits=50)
    answers = asyncio.run(_burst(server.url, created["key"], 50))

    codes = Counter(answer.status_code for answer in answers)
    assert codes == {200: 10, 402: 40}
    for answer in answers:
        assert answer.json()["code"] == answer.status_code
    assert balance(server.url, created["key"]) == 0
    tasks = query(
        database, f"SELECT COUNT(*) FROM tasks WHERE account_id = '{created['account_id']}'"
    )
    assert tasks == [(10,)]
    assert ledger_problems(database) == []


def test_failed_task_is_refunded_exactly_once(
    engine_server: tuple[ServerProcess, str | Path],
) -> None:
    server, database = engine_server
    key = new_key(server.url, credits=100)["key"]
    with image_server() as images:
        # A name that resolves to loopback passes submit and is refused at fetch time.
        source = images.replace("127.0.0.1", name_resolving_to_loopback()) + "/cat.png"
        task_id = create_task(
            server.url,
            key,
            {"model": "grok-imagine/image-to-video", "input": {"image_urls": [source]}},
        )
        assert balance(server.url, key) == 76
        data = wait_done(server.url, key, task_id)
    assert data["status"] == "FAILED"
    assert data["consumed_credits"] == 0
    assert "private or reserved" in data["error_message"]
    assert data["response"] is None
    assert balance(server.url, key) == 100
    refunds = query(
        database, f"SELECT amount FROM ledger WHERE task_id = '{task_id}' AND kind = 'refund'"
    )
    assert refunds == [(24,)]
    assert ledger_problems(database) == []


def test_task_past_its_deadline_fails_and_is_refunded(make_server: Any) -> None:
    server = make_server({"IMAGINE_PREVIEW_DELAY": "60", "IMAGINE_TASK_DEADLINE": "1"})
    key = new_key(server.url, credits=30)["key"]
    task_id = create_task(server.url, key, text_to_image())
    assert balance(server.url, key) == 25
    data = wait_done(server.url, key, task_id, timeout=30)
    assert data["status"] == "FAILED"
    assert data["error_message"] == "the task did not finish within 1 seconds"
    assert data["consumed_credits"] == 0
    assert balance(server.url, key) == 30
    assert ledger_problems(server.database) == []


class TestSourceDownloadFailures:
    """A source image that can't be used fails the task with a reason and refunds it."""

    def _run(self, make_server: Any, path: str) -> dict[str, Any]:
        server = make_server({"IMAGINE_ALLOW_PRIVATE_URLS": "true"})
        key = new_key(server.url, credits=24)["key"]
        with image_server() as images:
            task_id = create_task(
                server.url,
                key,
                {
                    "model": "grok-imagine/image-to-video",
                    "input": {"image_urls": [f"{images}{path}"]},
                },
            )
            data = wait_done(server.url, key, task_id)
        assert balance(server.url, key) == 24
        assert ledger_problems(server.database) == []
        return data

    def test_missing_image(self, make_server: Any) -> None:
        data = self._run(make_server, "/gone.png")
        assert data["status"] == "FAILED"
        assert "HTTP 404" in data["error_message"]

    def test_not_an_image(self, make_server: Any) -> None:
        data = self._run(make_server, "/notes.txt")
        assert data["status"] == "FAILED"
        assert "not a PNG, JPEG or WebP" in data["error_message"]


def test_successful_task_keeps_its_charge(server: ServerProcess) -> None:
    key = new_key(server.url, credits=5)["key"]
    task_id = create_task(server.url, key, text_to_image())
    data = wait_done(server.url, key, task_id)
    assert data["status"] == "SUCCESS"
    assert data["consumed_credits"] == 5
    assert balance(server.url, key) == 0
    assert ledger_problems(server.database) == []

"""POST /api/cancel: an unfinished task ends FAILED; its credits come back unless a paid
provider had started it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import auth, balance, create_task, new_key, status, text_to_image
from tests.support.databases import query
from tests.support.fake_kie import FakeKie
from tests.support.upstreams import kie_env, start_server


def _cancel(url: str, key: str, task_id: str) -> httpx.Response:
    return httpx.post(f"{url}/api/cancel", json={"task_id": task_id}, headers=auth(key))


def test_cancelling_a_task_the_provider_has_not_started_refunds_it(make_server: Any) -> None:
    server = make_server({"IMAGINE_PREVIEW_DELAY": "30"})
    key = new_key(server.url, credits=100)["key"]
    task_id = create_task(server.url, key, text_to_image("never mind"))
    answer = _cancel(server.url, key, task_id)
    assert answer.status_code == 200
    assert answer.json()["data"] == {
        "task_id": task_id,
        "status": "FAILED",
        "cancelled": True,
        "refunded": True,
        "consumed_credits": 0,
    }
    data = status(server.url, key, task_id).json()["data"]
    assert data["status"] == "FAILED"
    assert data["error_message"] == "cancelled by its owner"
    assert data["consumed_credits"] == 0
    assert balance(server.url, key) == 100

    again = _cancel(server.url, key, task_id)
    assert again.status_code == 409
    other = new_key(server.url)["key"]
    assert _cancel(server.url, other, task_id).status_code == 404
    time.sleep(0.5)  # the worker's later steps change nothing
    assert status(server.url, key, task_id).json()["data"]["status"] == "FAILED"
    assert balance(server.url, key) == 100


def test_cancelling_a_task_kie_has_started_keeps_its_credits(tmp_path: Path) -> None:
    with FakeKie(task_seconds=30, callbacks=False) as kie:
        server = start_server(tmp_path / "kie", kie_env(kie, IMAGINE_PROVIDER="kie"), public=False)
        try:
            key = new_key(server.url, credits=100)["key"]
            task_id = create_task(server.url, key, text_to_image("started"))
            # Cancel once the upstream id is stored, as the worker does right after kie answers.
            database = server.database
            deadline = time.monotonic() + 120
            stored = (
                f"SELECT COUNT(*) FROM tasks WHERE id = '{task_id}' AND upstream_id IS NOT NULL"
            )
            while query(database, stored) != [(1,)]:
                assert time.monotonic() < deadline, "the upstream id was never stored"
                time.sleep(0.05)
            answer = _cancel(server.url, key, task_id).json()["data"]
            assert answer["refunded"] is False
            assert answer["consumed_credits"] == 5
            data = status(server.url, key, task_id).json()["data"]
            assert data["status"] == "FAILED"
            assert data["consumed_credits"] == 5
            assert "its credits are kept" in data["error_message"]
            assert balance(server.url, key) == 95
        finally:
            server.stop()


def test_prefer_wait_answers_with_the_finished_task(make_server: Any) -> None:
    server = make_server({"IMAGINE_PREVIEW_DELAY": "0.5"})
    key = new_key(server.url, credits=100)["key"]
    headers = {**auth(key), "Prefer": "respond-async, wait=20"}
    answer = httpx.post(
        f"{server.url}/api/generate", json=text_to_image("wait"), headers=headers, timeout=30
    )
    assert answer.status_code == 200
    assert answer.headers["Preference-Applied"] == "wait=20"
    data = answer.json()["data"]
    assert data["status"] == "SUCCESS"
    assert data["response"]["resultUrls"]
    assert data == status(server.url, key, data["task_id"]).json()["data"]

    slow = make_server({"IMAGINE_PREVIEW_DELAY": "30"})
    slow_key = new_key(slow.url, credits=100)["key"]
    started = time.monotonic()
    answer = httpx.post(
        f"{slow.url}/api/generate",
        json=text_to_image("too slow"),
        headers={**auth(slow_key), "Prefer": "wait=1"},
        timeout=30,
    )
    assert time.monotonic() - started >= 1
    assert answer.json()["data"]["status"] == "IN_PROGRESS"
    assert set(answer.json()["data"]) == {"task_id", "status"}
    capped = httpx.post(
        f"{slow.url}/api/generate",
        json=text_to_image("capped"),
        headers={**auth(slow_key), "Prefer": "wait=0"},
        timeout=30,
    )
    assert capped.headers["Preference-Applied"] == "wait=0"

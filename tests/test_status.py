"""GET and POST /api/status: every field of the API document, isolation, refresh."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.support.api import (
    auth,
    create_task,
    new_key,
    status,
    text_to_image,
    wait_done,
    wait_for_progress,
)
from tests.support.server import ServerProcess

FIELDS = {
    "task_id",
    "status",
    "request",
    "response",
    "consumed_credits",
    "error_message",
    "created_at",
    "completed_at",
}


def test_get_and_post_answer_the_same(server: ServerProcess, key: str) -> None:
    task_id = create_task(server.url, key, text_to_image())
    wait_done(server.url, key, task_id)
    by_get = status(server.url, key, task_id).json()
    by_post = httpx.post(
        f"{server.url}/api/status", json={"task_id": task_id}, headers=auth(key)
    ).json()
    by_post_query = httpx.post(
        f"{server.url}/api/status", params={"task_id": task_id}, headers=auth(key)
    ).json()
    assert by_get == by_post == by_post_query
    assert by_get["code"] == 200
    assert by_get["message"] == "success"


def test_every_documented_field(server: ServerProcess, key: str) -> None:
    body = {
        "model": "grok-imagine/text-to-image",
        "input": {"prompt": "A majestic dragon flying over a neon-lit cyberpunk city"},
    }
    task_id = create_task(server.url, key, body)
    first = status(server.url, key, task_id).json()["data"]
    assert first["status"] in ("IN_PROGRESS", "SUCCESS")
    # `progress` is the one addition, and only while the task runs.
    assert set(first) - {"progress"} == FIELDS
    assert "progress" not in first or first["status"] == "IN_PROGRESS"
    data = wait_done(server.url, key, task_id)
    assert set(data) == FIELDS
    assert data["task_id"] == task_id
    assert data["status"] == "SUCCESS"
    assert data["request"] == body
    assert isinstance(data["response"]["resultUrls"], list)
    assert data["consumed_credits"] == 5
    assert data["error_message"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["completed_at"])


def test_in_progress_task_has_no_response(make_server: Any) -> None:
    slow = make_server({"IMAGINE_PREVIEW_DELAY": "30"})
    key = new_key(slow.url)["key"]
    task_id = create_task(slow.url, key, text_to_image())
    data = status(slow.url, key, task_id).json()["data"]
    assert data["status"] == "IN_PROGRESS"
    assert data["response"] is None
    assert data["consumed_credits"] == 5
    assert data["completed_at"] is None


def test_the_preview_engine_reports_its_progress_until_the_task_ends(make_server: Any) -> None:
    slow = make_server({"IMAGINE_PREVIEW_DELAY": "4"})
    key = new_key(slow.url)["key"]
    task_id = create_task(slow.url, key, text_to_image())
    seen = wait_for_progress(slow.url, key, task_id, at_least=1)
    assert 1 <= seen["progress"] <= 99
    assert set(seen) == FIELDS | {"progress"}
    done = wait_done(slow.url, key, task_id)
    assert done["status"] == "SUCCESS"
    assert set(done) == FIELDS


def test_prefer_wait_holds_the_answer_until_the_task_ends(make_server: Any) -> None:
    slow = make_server({"IMAGINE_PREVIEW_DELAY": "3"})
    key = new_key(slow.url)["key"]
    prefer = {**auth(key), "Prefer": "wait=60"}
    for method in ("GET", "POST"):
        task_id = create_task(slow.url, key, text_to_image())
        if method == "GET":
            answer = httpx.get(
                f"{slow.url}/api/status", params={"task_id": task_id}, headers=prefer, timeout=90
            )
        else:
            answer = httpx.post(
                f"{slow.url}/api/status", json={"task_id": task_id}, headers=prefer, timeout=90
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["status"] == "SUCCESS"
        assert answer.headers["Preference-Applied"] == "wait=60"
    # A wait shorter than the task answers with it still running, once the wait is over.
    task_id = create_task(slow.url, key, text_to_image())
    short = httpx.get(
        f"{slow.url}/api/status",
        params={"task_id": task_id},
        headers={**auth(key), "Prefer": "wait=1"},
        timeout=30,
    )
    assert short.json()["data"]["status"] == "IN_PROGRESS"
    assert short.headers["Preference-Applied"] == "wait=1"
    # Without the preference nothing waits and nothing says so.
    plain = status(slow.url, key, task_id)
    assert "Preference-Applied" not in plain.headers


def test_request_is_sanitized(server: ServerProcess, key: str) -> None:
    task_id = create_task(
        server.url,
        key,
        {
            "input": {"prompt": "a boat"},
            "callback_url": "https://user:secret@hooks.example.com:8443/done?token=abc#x",
            "public": True,
        },
    )
    data = status(server.url, key, task_id).json()["data"]
    assert data["request"] == {
        "model": "grok-imagine/text-to-image",
        "input": {"prompt": "a boat"},
        "callback_url": "https://hooks.example.com:8443/done",
        "public": True,
    }


def test_another_accounts_task_is_not_found(server: ServerProcess, key: str) -> None:
    other = new_key(server.url)["key"]
    task_id = create_task(server.url, other, text_to_image())
    answer = status(server.url, key, task_id)
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "message": f"task {task_id} not found", "data": None}
    unknown = status(server.url, key, "tdoesnotexist")
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "task tdoesnotexist not found"


def test_keys_of_one_account_see_its_tasks(server: ServerProcess) -> None:
    created = new_key(server.url)
    second = httpx.post(
        f"{server.url}/admin/keys",
        json={"name": "second", "account_id": created["account_id"]},
        headers=auth("test-admin-token"),
    ).json()["data"]
    task_id = create_task(server.url, created["key"], text_to_image())
    assert status(server.url, second["key"], task_id).status_code == 200


@pytest.mark.parametrize(
    ("method", "kwargs", "code", "message"),
    [
        ("GET", {}, 422, "task_id: required"),
        ("GET", {"params": {"task_id": ""}}, 422, "task_id: required"),
        ("POST", {}, 422, "task_id: required"),
        ("POST", {"json": {}}, 422, "task_id: required"),
        ("POST", {"json": {"task_id": 12}}, 422, "task_id"),
        ("POST", {"json": {"task_id": "t1", "x": 1}}, 422, "x: unknown field"),
        ("POST", {"content": b"{nope"}, 400, "not valid JSON"),
        ("GET", {"params": {"task_id": "t" * 101}}, 422, "task_id"),
    ],
)
def test_bad_status_requests(
    server: ServerProcess, key: str, method: str, kwargs: dict[str, Any], code: int, message: str
) -> None:
    answer = httpx.request(method, f"{server.url}/api/status", headers=auth(key), **kwargs)
    assert answer.status_code == code, answer.text
    assert answer.json()["code"] == code
    assert message in answer.json()["message"]


def test_status_needs_a_key(server: ServerProcess) -> None:
    answer = httpx.get(f"{server.url}/api/status", params={"task_id": "t1"})
    assert answer.status_code == 401
    assert answer.json()["data"] is None


def test_without_a_worker_the_status_call_renders_nothing(tmp_path: Any) -> None:
    """`serve --no-worker` does no worker work: polling a preview task leaves it in
    progress with no file made; a worker started on the same database finishes it."""
    from tests.support.server import ServerProcess as Server
    from tests.support.worker import WorkerProcess

    server = Server(tmp_path / "api", {"IMAGINE_PREVIEW_DELAY": "0"})
    server.no_worker = True
    with server:
        key = new_key(server.url)["key"]
        task_id = create_task(server.url, key, text_to_image())
        for _ in range(5):
            assert status(server.url, key, task_id).json()["data"]["status"] == "IN_PROGRESS"
            time.sleep(0.2)
        assert not (tmp_path / "api" / "files" / task_id).exists()
        with WorkerProcess(tmp_path / "worker", server.worker_env()):
            assert wait_done(server.url, key, task_id, timeout=60)["status"] == "SUCCESS"


def test_without_a_worker_the_status_call_asks_the_provider_once_and_hands_over(
    tmp_path: Any,
) -> None:
    """The inline refresh of `serve --no-worker` is one upstream status query; the
    results it learns of are copied by a worker, woken at once."""
    from tests.support.fake_kie import FakeKie
    from tests.support.server import ServerProcess as Server
    from tests.support.upstreams import kie_env, metric_total
    from tests.support.worker import WorkerProcess

    with FakeKie(task_seconds=0, callbacks=False) as kie:
        server = Server(tmp_path / "api", kie_env(kie, IMAGINE_PROVIDER="kie"))
        server.no_worker = True
        with server, WorkerProcess(tmp_path / "worker", server.worker_env()):
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, text_to_image())
            data = wait_done(server.url, key, task_id, timeout=90)
            assert data["status"] == "SUCCESS"
            calls = "imagine_upstream_calls_total"
            assert metric_total(server, calls, operation="create") == 0
            assert metric_total(server, calls, operation="poll") >= 1, "no inline status query"
            url = data["response"]["resultUrls"][0]
            assert httpx.get(url).status_code == 200


def test_bad_key_is_told_before_a_bad_task_id(server: ServerProcess) -> None:
    for params in ({}, {"task_id": "t" * 101}, {"task_id": "tnothing"}):
        answer = httpx.get(f"{server.url}/api/status", params=params, headers=auth("im_nope"))
        assert answer.status_code == 401


def test_finished_answers_stay_exact_and_guarded(server: ServerProcess) -> None:
    """Repeated polls of a finished task answer the same, and every poll still checks the
    key: another account's key gets 404 and a revoked key gets 401."""
    created = new_key(server.url)
    key = created["key"]
    task_id = create_task(server.url, key, text_to_image())
    first = wait_done(server.url, key, task_id)
    for _ in range(3):
        assert status(server.url, key, task_id).json()["data"] == first
    other = new_key(server.url)["key"]
    assert status(server.url, other, task_id).status_code == 404
    revoked = httpx.post(
        f"{server.url}/admin/keys/{created['key_id']}/revoke", headers=auth("test-admin-token")
    )
    assert revoked.status_code == 200
    assert status(server.url, key, task_id).status_code == 401

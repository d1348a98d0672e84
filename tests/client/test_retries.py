"""Retries over real sockets: a scripted server for 429 and 5xx, and a proxy that cuts a
generate's connection after the real server answered it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from imagine.client import Client, RateLimited, ServerError, Task
from tests.client.support import Answer, CuttingProxy, ScriptedServer, envelope, error_answer
from tests.support.api import balance, new_key
from tests.support.server import ServerProcess

CREDITS = envelope({"account_id": "acc_1", "balance": 7})


def _status(status: str, **extra: Any) -> Answer:
    return Answer(
        200,
        envelope(
            {
                "task_id": "t1",
                "status": status,
                "request": {"model": "grok-imagine/text-to-image", "input": {"prompt": "x"}},
                "response": {"resultUrls": ["http://cdn.test/a.png"]}
                if status == "SUCCESS"
                else None,
                "consumed_credits": 5,
                "error_message": None,
                "created_at": "2026-01-01T00:00:00Z",
                "completed_at": "2026-01-01T00:00:02Z" if status == "SUCCESS" else None,
                **extra,
            }
        ),
    )


def test_a_429_is_retried_after_its_retry_after() -> None:
    answers = iter([error_answer(429, "rate limit reached; retry in 1 s", **{"Retry-After": "1"})])
    with (
        ScriptedServer(lambda seen: next(answers, Answer(200, CREDITS))) as fake,
        Client(api_key="im_k", base_url=fake.url) as client,
    ):
        assert client.balance() == 7
    first, second = fake.seen
    assert second.at - first.at >= 1.0  # it waited at least what the server asked
    assert first.headers["authorization"] == "Bearer im_k"
    assert second.headers["authorization"] == "Bearer im_k"


def test_a_retry_after_beyond_reason_is_raised_at_once() -> None:
    limited = error_answer(429, "come back in an hour", **{"Retry-After": "3600"})
    with (
        ScriptedServer(lambda seen: limited) as fake,
        Client(base_url=fake.url) as client,
        pytest.raises(RateLimited) as raised,
    ):
        client.models()
    assert raised.value.retry_after == 3600
    assert raised.value.attempts == 1
    assert raised.value.message == "come back in an hour"
    assert len(fake.seen) == 1


def test_5xx_are_retried_then_raised() -> None:
    answers = iter([error_answer(503, "busy"), error_answer(500, "oops")])
    with ScriptedServer(lambda seen: next(answers, Answer(200, CREDITS))) as fake:
        with Client(base_url=fake.url, max_retries=2) as client:
            assert client.balance() == 7
        assert len(fake.seen) == 3
    failing = error_answer(502, "bad gateway")
    with ScriptedServer(lambda seen: failing) as fake:
        with Client(base_url=fake.url, max_retries=2) as client, pytest.raises(ServerError) as e:
            client.balance()
        assert len(fake.seen) == 3
    assert e.value.attempts == 3
    assert e.value.status_code == 502


def test_each_generate_sends_one_idempotency_key_across_its_retries() -> None:
    answers = iter([error_answer(503, "busy")])
    created = Answer(200, envelope({"task_id": "t1", "status": "IN_PROGRESS"}))
    with (
        ScriptedServer(lambda seen: next(answers, created)) as fake,
        Client(base_url=fake.url) as client,
    ):
        client.generate("x")
        client.generate("x")
    keys = [seen.headers["idempotency-key"] for seen in fake.seen]
    assert len(keys) == 3
    assert keys[0] == keys[1] != keys[2]
    assert json.loads(fake.seen[0].body) == {
        "model": "grok-imagine/text-to-image",
        "input": {"prompt": "x"},
    }


def test_wait_reads_progress_and_honours_retry_after_on_polls() -> None:
    answers = itertools.chain(
        [
            _status("IN_PROGRESS", progress=10),
            error_answer(429, "slow down", **{"Retry-After": "1"}),
            _status("IN_PROGRESS", progress=60),
            _status("IN_PROGRESS", progress=60),
        ],
        itertools.repeat(_status("SUCCESS")),
    )
    with ScriptedServer(lambda seen: next(answers)) as fake, Client(base_url=fake.url) as c:
        updates: list[Task] = []
        done = c.wait("t1", timeout=60, on_update=updates.append)
        assert done.succeeded
        assert [task.progress for task in updates] == [10, 60, None]
        assert done.result_urls == ("http://cdn.test/a.png",)
        assert c.generate("x").progress is None
    polls = [seen for seen in fake.seen if seen.path == "/api/status"]
    assert all(seen.query["task_id"] == ["t1"] for seen in polls)
    assert all(seen.headers.get("prefer", "").startswith("wait=") for seen in polls[1:])
    assert polls[2].at - polls[1].at >= 1.0  # the 429's Retry-After


def test_a_generate_cut_off_after_the_server_answered_is_charged_once(
    server: ServerProcess,
) -> None:
    key = new_key(server.url, credits=100)["key"]
    with CuttingProxy(server.port) as proxy, Client(api_key=key, base_url=proxy.url) as client:
        task = client.generate("exactly once")
        assert len(proxy.answers_dropped) == 1
        assert b" 200 OK" in proxy.answers_dropped[0].split(b"\r\n")[0]
        assert task.task_id.encode() in proxy.answers_dropped[0]  # the lost answer's task
    assert balance(server.url, key) == 95
    with Client(api_key=key, base_url=server.url) as direct:
        assert [listed.task_id for listed in direct.tasks()] == [task.task_id]

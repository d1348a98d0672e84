"""Idempotency-Key on POST /api/generate: a retried request gets the same task and is
charged once; the key with another body is refused."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from tests.support.api import auth, balance, new_key, text_to_image
from tests.support.databases import ledger_problems
from tests.support.server import ServerProcess


def _generate(
    server: ServerProcess, key: str, body: dict[str, object], idem: str
) -> httpx.Response:
    headers = {**auth(key), "Idempotency-Key": idem}
    return httpx.post(f"{server.url}/api/generate", json=body, headers=headers, timeout=30)


def test_a_retry_with_the_same_key_returns_the_same_task_and_charges_once(
    engine_server: tuple[ServerProcess, str | Path],
) -> None:
    server, database = engine_server
    key = new_key(server.url, credits=100)["key"]
    idem = str(uuid.uuid4())
    first = _generate(server, key, text_to_image("once"), idem)
    again = _generate(server, key, text_to_image("once"), idem)
    assert first.status_code == again.status_code == 200
    assert again.json()["data"]["task_id"] == first.json()["data"]["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert balance(server.url, key) == 95

    other_body = _generate(server, key, text_to_image("something else"), idem)
    assert other_body.status_code == 422
    assert other_body.json()["message"].startswith(
        "Idempotency-Key: already used with a different request body"
    )
    # Keys belong to accounts: another account's same key is a new task.
    stranger = new_key(server.url, credits=100)["key"]
    theirs = _generate(server, stranger, text_to_image("once"), idem)
    assert theirs.json()["data"]["task_id"] != first.json()["data"]["task_id"]

    async def burst() -> list[httpx.Response]:
        fresh = str(uuid.uuid4())
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/generate",
                        json=text_to_image("burst"),
                        headers={**auth(key), "Idempotency-Key": fresh},
                    )
                    for _ in range(10)
                )
            )

    answers = asyncio.run(burst())
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["data"]["task_id"] for answer in answers}) == 1
    assert balance(server.url, key) == 90
    assert ledger_problems(database) == []


def test_a_malformed_key_is_refused(server: ServerProcess, key: str) -> None:
    answer = _generate(server, key, text_to_image(), "x" * 201)
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("Idempotency-Key: give 1 to 200")

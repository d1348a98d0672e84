"""Two hundred generates at once, from four keys of one account whose balance covers
exactly 37 of them: exactly 37 are taken, the other 163 are refused with 402, and the
balance ends at 0 with the ledger in agreement, on SQLite and on PostgreSQL.

Each request carries an Idempotency-Key and is sent again with it on a 503 (the database
momentarily busy) or a broken connection, so a retry can never count twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.harness import add_key, wait_all_final
from tests.support.api import auth, balance, new_key, text_to_image
from tests.support.databases import ledger_problems, query
from tests.support.server import ServerProcess

pytestmark = pytest.mark.chaos

REQUESTS = 200
KEYS = 4
PRICE = 5
COVERED = 37


async def _one(
    client: httpx.AsyncClient, key: str, number: int, start: asyncio.Event, retries: Counter[str]
) -> httpx.Response:
    body = text_to_image(f"race {number}")
    headers = {**auth(key), "Idempotency-Key": str(uuid.uuid4())}
    await start.wait()
    for _ in range(50):
        try:
            answer = await client.post("/api/generate", json=body, headers=headers)
        except httpx.TransportError as exc:
            retries[type(exc).__name__] += 1
        else:
            if answer.status_code != 503:
                return answer
            retries["503"] += 1
        await asyncio.sleep(0.2)
    raise AssertionError(f"request {number} got no answer in 50 tries")


async def _race(url: str, keys: list[str], retries: Counter[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = asyncio.Event()
        requests = [
            asyncio.create_task(_one(client, keys[number % KEYS], number, start, retries))
            for number in range(REQUESTS)
        ]
        await asyncio.sleep(0)  # every request is waiting on the start
        start.set()
        return await asyncio.gather(*requests)


def test_concurrent_generates_from_several_keys_spend_exactly_the_balance(
    engine_server: tuple[ServerProcess, str | Path], figures: dict[str, Any]
) -> None:
    server, database = engine_server
    engine = "sqlite" if isinstance(database, Path) else "postgres"
    first = new_key(server.url, credits=COVERED * PRICE, name="race")
    account = first["account_id"]
    keys = [first["key"]] + [add_key(server.url, account, f"race {n}") for n in range(1, KEYS)]
    assert {balance(server.url, key) for key in keys} == {COVERED * PRICE}

    retries: Counter[str] = Counter()
    started = time.monotonic()
    answers = asyncio.run(_race(server.url, keys, retries))
    codes = Counter(answer.status_code for answer in answers)
    figures.update(
        {
            "engine": engine,
            "requests": REQUESTS,
            "keys": KEYS,
            "balance_before": COVERED * PRICE,
            "answers_by_status": {str(code): count for code, count in sorted(codes.items())},
            "retries": dict(retries),
            "race_seconds": round(time.monotonic() - started, 1),
        }
    )

    assert codes == {200: COVERED, 402: REQUESTS - COVERED}
    for answer in answers:
        assert answer.json()["code"] == answer.status_code
    taken = [answer.json()["data"]["task_id"] for answer in answers if answer.status_code == 200]
    assert len(set(taken)) == COVERED
    assert {balance(server.url, key) for key in keys} == {0}
    rows = query(database, f"SELECT id FROM tasks WHERE account_id = '{account}'")
    assert {str(row[0]) for row in rows} == set(taken)

    final = wait_all_final(server.url, keys[0], taken, timeout=120, pause=0.5)
    statuses = Counter(str(data["status"]) for data in final.values())
    refunded = sum(PRICE for data in final.values() if data["status"] == "FAILED")
    figures["tasks_by_status"] = dict(statuses)
    assert sum(statuses[status] for status in ("SUCCESS", "FAILED")) == COVERED
    assert {balance(server.url, key) for key in keys} == {refunded}
    assert ledger_problems(database) == []

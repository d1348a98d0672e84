"""Per-key rate limits: 429 in the envelope with Retry-After and X-RateLimit-*, separate
budgets for generate and status, one budget across processes through Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import auth, create_task, generate, new_key, text_to_image
from tests.support.server import ServerProcess, free_port

LIMITS = {"IMAGINE_RATE_LIMIT_GENERATE": "3/minute", "IMAGINE_RATE_LIMIT_STATUS": "5/minute"}


def test_generate_and_status_have_their_own_per_key_budgets(make_server: Any) -> None:
    server = make_server(LIMITS)
    key = new_key(server.url)["key"]
    answers = [generate(server.url, key, text_to_image(f"n{n}")) for n in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.json()["code"] == 429
    assert refused.json()["data"] is None
    assert "rate limit of 3 generate requests per minute reached" in refused.json()["message"]
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert 0 <= int(refused.headers["X-RateLimit-Reset"]) <= 60

    # Status has its own budget, and GET and POST share it.
    task_id = answers[0].json()["data"]["task_id"]
    codes = [
        httpx.get(
            f"{server.url}/api/status", params={"task_id": task_id}, headers=auth(key)
        ).status_code
        for _ in range(3)
    ]
    codes += [
        httpx.post(
            f"{server.url}/api/status", json={"task_id": task_id}, headers=auth(key)
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 200, 200, 200, 429]

    # Another key is not affected.
    other = new_key(server.url)["key"]
    assert generate(server.url, other, text_to_image()).status_code == 200


def test_processes_share_one_budget_through_redis(make_server: Any, tmp_path: Path) -> None:
    env = {**LIMITS, "IMAGINE_REDIS_URL": "redis://127.0.0.1:6379/0"}
    first = make_server(env, data_dir=tmp_path / "fleet")
    second = ServerProcess(tmp_path / "fleet", first.env)
    second.no_worker = True
    second.start()
    try:
        key = new_key(first.url)["key"]
        create_task(first.url, key, text_to_image("a"))
        create_task(second.url, key, text_to_image("b"))
        create_task(first.url, key, text_to_image("c"))
        assert generate(second.url, key, text_to_image("d")).status_code == 429
    finally:
        second.stop()


def test_a_limit_that_does_not_parse_stops_the_start(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "imagine", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env={**clean, "IMAGINE_DATA_DIR": str(tmp_path), "IMAGINE_RATE_LIMIT_GENERATE": "lots"},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: invalid setting IMAGINE_RATE_LIMIT_GENERATE: write it as COUNT/PERIOD, "
        "for example 120/minute or 5/second"
    )

"""Small helpers over httpx for talking to a running server."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.server import ADMIN_TOKEN

http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
"""One client for every call: `httpx.get` and friends build a client per call, and its
TLS context costs some 70 ms of CPU each time. No connection is kept between calls, so
each request is made as before, on a connection of its own."""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(base_url: str, *, credits: int = 1000, name: str = "tester") -> dict[str, Any]:
    answer = http.post(
        f"{base_url}/admin/keys",
        json={"name": name, "credits": credits},
        headers=auth(ADMIN_TOKEN),
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def generate(base_url: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{base_url}/api/generate", json=body, headers=auth(key), timeout=30)


def create_task(base_url: str, key: str, body: dict[str, Any]) -> str:
    answer = generate(base_url, key, body)
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["task_id"]
    return task_id


def status(base_url: str, key: str, task_id: str) -> httpx.Response:
    return http.get(
        f"{base_url}/api/status", params={"task_id": task_id}, headers=auth(key), timeout=30
    )


def wait_done(base_url: str, key: str, task_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll like a client until the task ends; returns its status data."""
    deadline = time.monotonic() + timeout
    while True:
        answer = status(base_url, key, task_id)
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        if data["status"] != "IN_PROGRESS":
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still IN_PROGRESS after {timeout}s")
        time.sleep(0.1)


def wait_for_progress(
    base_url: str, key: str, task_id: str, *, at_least: int, timeout: float = 120
) -> dict[str, Any]:
    """Poll until the task, still IN_PROGRESS, reports `progress` of at least `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = status(base_url, key, task_id)
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        assert data["status"] == "IN_PROGRESS", data
        if data.get("progress", -1) >= at_least:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} showed no progress of {at_least} in {timeout}s")
        time.sleep(0.1)


def cancel(base_url: str, key: str, task_id: str) -> httpx.Response:
    return http.post(f"{base_url}/api/cancel", json={"task_id": task_id}, headers=auth(key))


def balance(base_url: str, key: str) -> int:
    answer = http.get(f"{base_url}/api/credits", headers=auth(key))
    assert answer.status_code == 200, answer.text
    value: int = answer.json()["data"]["balance"]
    return value


def text_to_image(
    prompt: str = "A majestic dragon flying over a neon-lit cyberpunk city",
) -> dict[str, Any]:
    return {"model": "grok-imagine/text-to-image", "input": {"prompt": prompt}}

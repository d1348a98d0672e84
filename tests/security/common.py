"""What the security tests share: waiting on a condition, and reading deliveries."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tests.support.api import auth, http

T = TypeVar("T")


def eventually(find: Callable[[], T | None], timeout: float = 60, what: str = "it") -> T:
    """Poll until `find` returns something; generous bounds, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:g}s"
        time.sleep(0.1)
    return found


def deliveries(base_url: str, key: str, task_id: str | None = None) -> list[dict[str, Any]]:
    params = {"task_id": task_id} if task_id is not None else {}
    answer = http.get(f"{base_url}/api/webhooks", params=params, headers=auth(key), timeout=30)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


class HasJson(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def assert_error_envelope(answer: HasJson, code: int) -> str:
    """An error in the documented envelope: HTTP status = code, data null; its message."""
    assert answer.status_code == code, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "data"}, body
    assert body["code"] == code, body
    assert body["data"] is None, body
    message: str = body["message"]
    return message

"""What the chaos tests share: a server that can be killed as a whole process group, keys
on one account, waiting for tasks like a client, and reading the fakes' call records."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, BinaryIO

import httpx

from tests.support.api import auth
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import ADMIN_TOKEN, ServerProcess
from tests.support.upstreams import most_in_any_window

FINAL = ("SUCCESS", "FAILED")
PRICES = {
    "grok-imagine/text-to-image": 5,
    "grok-imagine/text-to-video": 24,
    "grok-imagine/image-to-video": 24,
    "grok-imagine/upscale": 12,
}


class CrashableServer(ServerProcess):
    """`imagine serve` in a process group of its own, so that SIGKILL takes the whole
    group at once (nothing of it gets to run shutdown code), as a crash or an OOM kill."""

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "imagine", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--no-access-log"]
        return subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def spawn(self) -> None:
        """Start the process and return at once (it is not answering yet)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)

    def answering(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_answering(self, timeout: float = 120) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not self.answering():
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not come up:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def crash(self) -> None:
        """SIGKILL to the server's whole process group; returns once it is gone."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def add_key(base_url: str, account_id: str, name: str = "another") -> str:
    """One more key on an existing account (no credits added)."""
    answer = httpx.post(
        f"{base_url}/admin/keys",
        json={"name": name, "account_id": account_id},
        headers=auth(ADMIN_TOKEN),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["account_id"] == account_id
    key: str = answer.json()["data"]["key"]
    return key


def wait_all_final(
    base_url: str, key: str, task_ids: Iterable[str], *, timeout: float, pause: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Poll /api/status for every task, round after round, until each has ended or
    `timeout` seconds have passed; returns the last status data of each."""
    last: dict[str, dict[str, Any]] = {}
    waiting = list(dict.fromkeys(task_ids))
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, headers=auth(key), timeout=30) as client:
        while waiting:
            still = []
            for task_id in waiting:
                try:
                    answer = client.get("/api/status", params={"task_id": task_id})
                except httpx.HTTPError:
                    still.append(task_id)
                    continue
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 200:
                    last[task_id] = answer.json()["data"]
                if last.get(task_id, {}).get("status") not in FINAL:
                    still.append(task_id)
            waiting = still
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(pause)
    return last


def seconds_to_finish(data: dict[str, Any]) -> float:
    """completed_at - created_at of a finished task (both are whole seconds)."""
    created = datetime.fromisoformat(str(data["created_at"]).replace("Z", "+00:00"))
    completed = datetime.fromisoformat(str(data["completed_at"]).replace("Z", "+00:00"))
    return (completed - created).total_seconds()


def bucket_allows(calls: int, seconds: float, window: float = 1.0) -> int:
    """The most calls a leaky bucket of `calls` per `seconds` lets through in any window:
    a full bucket at once, plus what drains from it during the window."""
    return int(calls + calls * window / seconds)


def resent_calls(fake: FakeUpstream, operation: str) -> list[float]:
    """Times of the calls that were the same GET again right after the fake reset its
    connection, with no other call of that target in between: the HTTP client's own
    resend of an idempotent request (aiohttp does it once), not a call the server chose
    to make. (A POST is never resent, and all creates share one target.)"""
    pending = sorted(item for item in fake.resets if item[1].startswith("GET "))
    waiting: set[str] = set()
    resent: list[float] = []
    for when, op, target in fake.call_log:
        while pending and pending[0][0] <= when:
            waiting.add(pending.pop(0)[1])
        if op != operation:
            continue
        if target in waiting:
            waiting.discard(target)
            resent.append(when)
    return resent


def budget_use(fake: FakeUpstream, operation: str, calls: int, seconds: float) -> dict[str, Any]:
    """How one operation's calls at the fake compare with a leaky bucket of `calls` per
    `seconds`: the busiest second, with and without the HTTP client's resends."""
    times = fake.call_times.get(operation, [])
    resent = resent_calls(fake, operation)
    chosen = list(times)
    for when in resent:
        chosen.remove(when)
    return {
        "calls": len(times),
        "resent_after_reset": len(resent),
        "most_in_1s": most_in_any_window(times),
        "most_in_1s_without_resends": most_in_any_window(chosen),
        "allowed_in_1s": bucket_allows(calls, seconds),
    }

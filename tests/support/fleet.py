"""A fleet on one machine: the local Redis, throwaway Redis servers, and `imagine worker`
processes beside a `serve --no-worker`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

import pytest
import redis

from tests.support.running import Running
from tests.support.server import free_port

REDIS_URL = os.environ.get("IMAGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def reachable(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def shared_redis() -> str:
    """The machine's Redis; the test is skipped without one (and fails in CI, which has it)."""
    if not reachable(REDIS_URL):
        message = f"Redis is not reachable at {REDIS_URL} (set IMAGINE_TEST_REDIS to another)"
        if os.environ.get("CI"):
            raise AssertionError(message)
        pytest.skip(message)
    return REDIS_URL


class RedisServer(Running):
    """A redis-server of the test's own on a free port, to stop and start again."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                raise AssertionError("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not reachable(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not come up")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

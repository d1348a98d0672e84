"""Runs `imagine worker --metrics-port` as a real process beside a `serve --no-worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

from tests.support.running import Running, wait_healthy
from tests.support.server import free_port


class WorkerProcess(Running):
    """`url` is its metrics server's address: /metrics, /healthz, /readyz."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "IMAGINE_PREVIEW_DELAY": "0.2",
            "IMAGINE_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.log_path = data_dir / f"worker-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "imagine", "worker", "--data-dir", str(self.data_dir)]
        command += ["--metrics-port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_healthy(self.process, self.url, "worker", self.log)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

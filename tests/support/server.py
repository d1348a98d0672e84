"""Runs `imagine serve` as a real process on a loopback port, as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Self

from tests.support.databases import database_of, sqlalchemy_url
from tests.support.running import Running, wait_healthy

ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess(Running):
    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, *, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "IMAGINE_ADMIN_TOKEN": ADMIN_TOKEN,
            "IMAGINE_PREVIEW_DELAY": "0.2",
            "IMAGINE_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.database: Path | str = data_dir / "imagine.db"
        """Where the server keeps its data, for tests that read it directly."""
        given = self.env.get("IMAGINE_DATABASE_URL")
        if given is not None:
            self.database = (
                Path(given.removeprefix("sqlite+aiosqlite:///"))
                if given.startswith("sqlite")
                else given.replace("+asyncpg", "")
            )
        else:
            url = database_of(data_dir)
            if url is not None:
                self.env["IMAGINE_DATABASE_URL"] = sqlalchemy_url(url)
                self.database = url
        self.log_path = data_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.no_worker = False
        self.access_log = False

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)
        wait_healthy(self.process, self.url, "server", self.log)
        return self

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "imagine", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir)]
        command.append("--access-log" if self.access_log else "--no-access-log")
        if self.no_worker:
            command.append("--no-worker")
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def worker_env(self) -> dict[str, str]:
        """The settings of an `imagine worker` sharing this server's database and files."""
        env = {key: value for key, value in self.env.items() if key.startswith("IMAGINE_")}
        env.setdefault(
            "IMAGINE_DATABASE_URL",
            f"sqlite+aiosqlite:///{(self.data_dir / 'imagine.db').resolve()}",
        )
        env.setdefault("IMAGINE_STORAGE_URL", str((self.data_dir / "files").resolve()))
        env.setdefault("IMAGINE_PUBLIC_URL", self.url)
        return env

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

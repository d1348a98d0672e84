"""Log lines of real `imagine serve` processes: visible at info, text or one JSON object
per line, the task's id on its lines, and no secret in any line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.server import ServerProcess


class SplitServer(ServerProcess):
    """A server whose stderr (the log) is kept apart from stdout (the welcome text)."""

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / f"stderr-{self.port}.log"

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "imagine", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--access-log"]
        with self.stderr_path.open("ab") as stderr:
            return subprocess.Popen(command, env=self.env, stdout=log, stderr=stderr)

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr_path.read_text().splitlines() if line.strip()]


def _eventually(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_serve_at_info_shows_task_results_in_text(tmp_path: Path) -> None:
    with SplitServer(tmp_path / "text", {"IMAGINE_LOG_LEVEL": "info"}) as server:
        key = new_key(server.url)["key"]
        task_id = create_task(server.url, key, text_to_image("a logged task"))
        assert wait_done(server.url, key, task_id)["status"] == "SUCCESS"
        wanted = f"INFO imagine.worker [{task_id}] task {task_id}: SUCCESS"
        _eventually(lambda: any(wanted in line for line in server.stderr_lines()))
        started = [line for line in server.stderr_lines() if "Application startup complete" in line]
        assert started, server.stderr_lines()
        assert started[0].split(" ", 2)[1:2] == ["INFO"]
        # uvicorn's access lines come out in the same format.
        access = [line for line in server.stderr_lines() if " uvicorn.access " in line]
        assert any('"POST /api/generate HTTP/1.1" 200' in line for line in access)


def test_json_lines_parse_one_by_one_with_their_keys(tmp_path: Path) -> None:
    env = {"IMAGINE_LOG_LEVEL": "info", "IMAGINE_LOG_FORMAT": "json"}
    with SplitServer(tmp_path / "json", env) as server:
        key = new_key(server.url)["key"]
        task_id = create_task(server.url, key, text_to_image("a task in JSON"))
        assert wait_done(server.url, key, task_id)["status"] == "SUCCESS"

        def result_logged() -> bool:
            return any(
                line.get("task_id") == task_id and "SUCCESS" in line["message"]
                for line in _parsed(server.stderr_lines())
            )

        _eventually(result_logged)
        lines = _parsed(server.stderr_lines())
        for line in lines:
            assert {"time", "level", "logger", "message"} <= line.keys(), line
            moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
            assert moment.utcoffset() is not None
            assert moment.utcoffset() == UTC.utcoffset(None)
            assert line["time"].endswith("Z")
            assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        loggers = {line["logger"] for line in lines}
        assert {"imagine.worker", "uvicorn.error", "uvicorn.access"} <= loggers
        (result,) = [line for line in lines if line.get("task_id") == task_id]
        assert result == {
            "time": result["time"],
            "level": "INFO",
            "logger": "imagine.worker",
            "message": f"task {task_id}: SUCCESS",
            "task_id": task_id,
        }


def test_a_bad_log_format_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imagine", "worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGINE_LOG_FORMAT": "xml"},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: invalid setting IMAGINE_LOG_FORMAT:")
    assert "Traceback" not in done.stderr


API_KEY = "im_" + "k" * 40
PROVIDER_KEY = "kie-provider-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-9876543210-zyxw"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
CALLBACK_TOKEN = "cbtok_0123456789abcdefghij"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci13ZWJob29rcw=="
XAI_KEY = "xai-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
DB_PASSWORD = "pg-password-s3cr3t"
SECRETS = (
    API_KEY,
    PROVIDER_KEY,
    ADMIN_TOKEN,
    AWS_SECRET,
    AWS_KEY_ID,
    CALLBACK_TOKEN,
    WEBHOOK_SECRET,
    XAI_KEY,
    DB_PASSWORD,
)
_LOGS_SECRETS = textwrap.dedent(
    f"""
    import logging, logging.config
    from imagine.logs import logging_config
    logging.config.dictConfig(logging_config("info", __import__("sys").argv[1]))
    log = logging.getLogger("imagine.worker")
    log.info("key %s in a message", {API_KEY!r})
    log.info("Authorization: Bearer %s", "opaque-bearer-token-value")
    log.warning("kie answered for %s", {PROVIDER_KEY!r})
    log.info("admin %s", {ADMIN_TOKEN!r})
    log.info("aws_secret_access_key=%s id %s", {AWS_SECRET!r}, {AWS_KEY_ID!r})
    log.info("POST https://example.com/callbacks/kie/tsk_1/%s?x=1", {CALLBACK_TOKEN!r})
    log.info("signing with %s", {WEBHOOK_SECRET!r})
    log.info("xai %s and postgresql+asyncpg://imagine:%s@db/imagine", {XAI_KEY!r}, {DB_PASSWORD!r})
    log.info('{{"api_key": "%s"}}', "json-held-api-key-value")
    try:
        raise RuntimeError("upstream refused key " + {PROVIDER_KEY!r})
    except RuntimeError:
        log.exception("a step failed")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/admin/keys/{API_KEY}", "1.1", 200
    )
    """
)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_a_log_line(log_format: str) -> None:
    env = {
        **os.environ,
        "IMAGINE_KIE_API_KEY": PROVIDER_KEY,
        "IMAGINE_ADMIN_TOKEN": ADMIN_TOKEN,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    done = subprocess.run(
        [sys.executable, "-c", _LOGS_SECRETS, log_format],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert log.count("\n") >= 11  # one line per call (and the traceback in text)
    for secret in (*SECRETS, "opaque-bearer-token-value", "json-held-api-key-value"):
        assert secret not in log
    assert "<redacted>" in log
    assert "Traceback" in log  # the traceback is kept, only the secret is masked
    if log_format == "json":
        lines = [json.loads(line) for line in log.splitlines()]
        assert "RuntimeError: upstream refused key <redacted>" in lines[-2]["exception"]


def test_secrets_in_request_paths_stay_out_of_the_access_log(tmp_path: Path) -> None:
    env = {"IMAGINE_LOG_LEVEL": "info", "IMAGINE_LOG_FORMAT": "json"}
    with SplitServer(tmp_path / "access", env) as server:
        key = new_key(server.url)["key"]
        httpx.get(f"{server.url}/admin/keys/{key}", headers=auth(key))
        httpx.post(f"{server.url}/callbacks/kie/tsk_1/{CALLBACK_TOKEN}", json={})
        httpx.get(f"{server.url}/api/status", params={"task_id": "t", "token": ADMIN_TOKEN})

        def logged() -> list[str]:
            return [
                line["message"]
                for line in _parsed(server.stderr_lines())
                if line["logger"] == "uvicorn.access"
            ]

        _eventually(lambda: sum("/api/status" in line for line in logged()) == 1)
        text = "\n".join(logged())
        for secret in (key, CALLBACK_TOKEN, ADMIN_TOKEN):
            assert secret not in text
        assert "/callbacks/kie/tsk_1/" in text

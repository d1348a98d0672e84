"""A client generated from the document by a standard generator builds and works.

openapi-python-client (pinned below) reads /openapi.json from a running server, with
warnings made errors: a part of the document it can't turn into code fails the test. The
generated package is installed with pip, and a script run in the generator's environment
(which has the client's dependencies, httpx and attrs) creates a task with an
Idempotency-Key through it, replays the request, polls the task's status until it ends
and reads an unknown task's 404: the typed answers it parses are those the document
declares.

The generator's environment is made once with `python -m venv` and kept in .tools/
(ignored by git) for later runs; it is rebuilt when the pins below change. The first run
needs PyPI, as `make install` does.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.api import auth, http
from tests.support.server import ServerProcess

PINS = ("openapi-python-client==0.29.1", "setuptools==80.9.0")
"""The generator, and the setuptools that builds what it generates (`--meta setup`)."""
CACHE = Path(__file__).resolve().parents[1] / ".tools" / "openapi-python-client"

SCRIPT = """
import json, sys, time, uuid

from imagine_client import AuthenticatedClient
from imagine_client.api.generation import generate, get_status
from imagine_client.models import (
    EnvelopeStatusData,
    ErrorEnvelope,
    GenerateInput,
    GenerateRequest,
    TaskCreated,
    TaskStatus,
)

base_url, key = sys.argv[1:3]
with AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True) as client:
    body = GenerateRequest(
        model="grok-imagine/text-to-image",
        input_=GenerateInput(prompt="a lighthouse, drawn for a generated client"),
    )
    idempotency_key = str(uuid.uuid4())
    created = generate.sync_detailed(client=client, body=body, idempotency_key=idempotency_key)
    assert created.status_code == 200, created.content
    task = created.parsed.data
    assert isinstance(task, TaskCreated), task
    assert task.status == TaskStatus.IN_PROGRESS, task

    replayed = generate.sync_detailed(client=client, body=body, idempotency_key=idempotency_key)
    assert replayed.headers["Idempotent-Replayed"] == "true", replayed.headers
    assert replayed.parsed.data.task_id == task.task_id

    deadline = time.monotonic() + 120
    while True:
        answer = get_status.sync(client=client, task_id=task.task_id)
        assert isinstance(answer, EnvelopeStatusData), answer
        if answer.data.status != TaskStatus.IN_PROGRESS:
            break
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.1)

    unknown = get_status.sync(client=client, task_id="t-no-such-task")
    assert isinstance(unknown, ErrorEnvelope), unknown
    print(json.dumps({
        "task_id": task.task_id,
        "status": answer.data.status.value,
        "resultUrls": answer.data.response.result_urls,
        "consumed_credits": answer.data.consumed_credits,
        "unknown": [unknown.code, unknown.message],
    }))
"""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time (parallel test runs share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str | Path], *, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def _environment(venv: Path) -> dict[str, str]:
    """The environment of commands run in `venv`: its bin/ first on PATH (the generator
    formats its output with the ruff it installed), nothing of this project's venv."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def generator_venv() -> Path:
    """The generator's environment, made on first use and kept for later runs."""
    ready = CACHE / "installed.txt"
    with _locked(CACHE.with_name("openapi-python-client.lock")):
        if ready.exists() and ready.read_text() == "\n".join(PINS):
            return CACHE
        shutil.rmtree(CACHE, ignore_errors=True)
        env = _environment(CACHE)
        try:
            _run([sys.executable, "-m", "venv", CACHE], env=env, timeout=300)
            _run(
                [CACHE / "bin" / "python", "-m", "pip", "install", "-q", *PINS],
                env=env,
                timeout=600,
            )
        except AssertionError as exc:
            shutil.rmtree(CACHE, ignore_errors=True)
            if os.environ.get("CI"):
                raise
            pytest.skip(f"could not install {PINS[0]} (is PyPI reachable?): {exc}")
        ready.write_text("\n".join(PINS))
    return CACHE


def test_a_generated_client_creates_a_task_and_reads_its_status(
    server: ServerProcess, key: str, tmp_path: Path
) -> None:
    venv = generator_venv()
    env = _environment(venv)
    generated = tmp_path / "imagine-client"
    _run(
        [
            venv / "bin" / "openapi-python-client",
            "generate",
            "--url",
            f"{server.url}/openapi.json",
            "--meta",
            "setup",
            "--output-path",
            generated,
            "--fail-on-warning",
        ],
        env=env,
        timeout=300,
    )
    # Installed beside the generator's environment rather than into it, so that the
    # cached environment stays as it was made.
    site = tmp_path / "site"
    _run(
        [
            venv / "bin" / "python",
            *("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"),
            *("--target", site, generated),
        ],
        env=env,
        timeout=300,
    )
    script = tmp_path / "use_client.py"
    script.write_text(SCRIPT)
    output = _run(
        [venv / "bin" / "python", script, server.url, key],
        env={**env, "PYTHONPATH": str(site)},
        timeout=300,
    )
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["status"] == "SUCCESS", seen
    assert seen["consumed_credits"] == 5
    assert len(seen["resultUrls"]) == 1
    assert seen["resultUrls"][0].startswith(f"{server.url}/files/")
    assert seen["unknown"][0] == 404
    assert "not found" in seen["unknown"][1]

    # What the client saw is what the server holds: one task, charged once.
    answer = http.get(
        f"{server.url}/api/status", params={"task_id": seen["task_id"]}, headers=auth(key)
    )
    assert answer.json()["data"]["response"]["resultUrls"] == seen["resultUrls"]
    balance = http.get(f"{server.url}/api/credits", headers=auth(key)).json()["data"]["balance"]
    assert balance == 1000 - 5

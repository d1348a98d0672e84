"""The client commands of `imagine` (generate, status, tasks, download, balance, cancel,
models, login, logout) against a real server: through Typer's runner and as a
subprocess, with `--json` parsed, and each exit code."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from imagine.cli import app
from imagine.cli_client import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_CREDITS,
    EXIT_ERROR,
    EXIT_TASK_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from tests.support.api import new_key
from tests.support.server import ServerProcess, free_port

runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Any:
    """`imagine ARGS` in this process, through Typer's runner."""
    return runner.invoke(app, list(args), input=input)


def cli_json(*args: str) -> Any:
    done = cli(*args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def imagine(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`imagine ARGS` as its own process, as a script runs it (output not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "imagine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def logged_in(monkeypatch: pytest.MonkeyPatch, server: ServerProcess, key: str) -> str:
    """The key and server given by the environment, as a script would."""
    monkeypatch.setenv("IMAGINE_API_KEY", key)
    monkeypatch.setenv("IMAGINE_BASE_URL", server.url)
    return key


def test_generate_waits_saves_every_result_and_prints_json(
    server: ServerProcess, key: str, tmp_path: Path
) -> None:
    env = {"IMAGINE_API_KEY": key, "IMAGINE_BASE_URL": server.url}
    done = imagine(
        "generate", "a fox in snow", "--option", "aspect_ratio=16:9", "--wait", "--out",
        str(tmp_path / "out"), "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "SUCCESS"
    assert shown["request"]["input"] == {"prompt": "a fox in snow", "aspect_ratio": "16:9"}
    (url,) = shown["response"]["resultUrls"]
    (saved,) = shown["files"]
    assert Path(saved).parent == tmp_path / "out"
    assert Path(saved).read_bytes() == httpx.get(url).content

    # Without --wait it answers at once with the id and how to follow the task.
    started = imagine("generate", "a second fox", env=env)
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.split()[0]
    assert f"imagine status {task_id} --wait" in started.stdout
    followed = imagine("status", task_id, "--wait", "--json", env=env)
    assert json.loads(followed.stdout)["status"] == "SUCCESS"


def test_human_output_is_never_cut_when_piped(server: ServerProcess, key: str) -> None:
    env = {"IMAGINE_API_KEY": key, "IMAGINE_BASE_URL": server.url, "COLUMNS": "40"}
    started = imagine("generate", "a long prompt " * 20, "--wait", "--out", os.devnull, env=env)
    assert started.returncode in (0, EXIT_ERROR), started.stderr
    listed = imagine("tasks", "--limit", "3", env=env)
    assert listed.returncode == 0, listed.stderr
    ids = [task["task_id"] for task in json.loads(imagine("tasks", "--json", env=env).stdout)]
    assert ids
    assert all(task_id in listed.stdout for task_id in ids[:3])
    assert "…" not in listed.stdout


def test_status_tasks_download_balance_and_models(
    logged_in: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = cli_json("generate", "a teapot", "--wait")
    task_id = made["task_id"]
    assert made["status"] == "SUCCESS"
    assert [Path(saved).parent for saved in made["files"]] == [Path(".")]  # --wait saves here

    assert cli_json("status", task_id) == {k: v for k, v in made.items() if k != "files"}
    listed = cli_json("tasks", "--status", "SUCCESS", "--model", "text-to-image", "--limit", "5")
    assert task_id in [task["task_id"] for task in listed]
    assert all(task["status"] == "SUCCESS" for task in listed)
    assert len(listed) <= 5

    paths = cli_json("download", task_id, "--out", str(tmp_path / "d"))
    (url,) = made["response"]["resultUrls"]
    assert [Path(path).read_bytes() for path in paths] == [httpx.get(url).content]

    balance = cli_json("balance")
    assert set(balance) == {"account_id", "balance"}
    human = cli("balance")
    assert f"{balance['balance']} credits" in human.stdout

    models = cli_json("models")
    assert {"grok-imagine/text-to-image", "grok-imagine/upscale"} <= {m["model"] for m in models}

    table = cli("tasks", "--limit", "2")
    assert table.exit_code == 0, table.output
    assert "SUCCESS" in table.stdout


def test_upscale_from_a_task_with_the_live_display(logged_in: str, tmp_path: Path) -> None:
    image = cli_json("generate", "a small boat", "--wait", "--out", str(tmp_path))
    shown = cli("generate", "--model", "upscale", "--from-task", image["task_id"], "--wait",
                "--out", str(tmp_path))  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "SUCCESS" in shown.stdout
    assert "saved" in shown.stdout
    assert len(list(tmp_path.iterdir())) == 2


def test_login_checks_the_key_and_stores_it_for_the_user_only(
    server: ServerProcess, key: str, tmp_path: Path
) -> None:
    refused = cli("login", "--base-url", server.url, "--key-stdin", input="im_not_a_key\n")
    assert refused.exit_code == EXIT_AUTH
    login_file = tmp_path / "config" / "imagine" / "login.json"
    assert not login_file.exists()

    done = cli("login", "--base-url", server.url, "--key-stdin", input=key + "\n")
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    assert json.loads(login_file.read_text()) == {"base_url": server.url, "api_key": key}
    assert key not in done.output

    # Every command now finds the server and the key by itself.
    assert cli("balance").exit_code == 0
    asked = cli("login", "--base-url", server.url, input=key + "\n")  # hidden prompt
    assert asked.exit_code == 0, asked.output
    assert key not in asked.output

    out = cli("logout")
    assert out.exit_code == 0
    assert not login_file.exists()
    assert cli("balance").exit_code == EXIT_AUTH
    assert "imagine login" in cli("balance").stderr


def test_each_failure_has_its_exit_code(
    server: ServerProcess, slow_server: ServerProcess, key: str, tmp_path: Path
) -> None:
    env = {"IMAGINE_BASE_URL": server.url}

    bad_key = imagine("balance", env={**env, "IMAGINE_API_KEY": "im_wrong"})
    assert bad_key.returncode == EXIT_AUTH
    assert "401" in bad_key.stderr

    poor = new_key(server.url, credits=4)["key"]
    short = imagine("generate", "a cat", env={**env, "IMAGINE_API_KEY": poor})
    assert short.returncode == EXIT_CREDITS
    assert "402" in short.stderr
    assert "credits" in short.stderr

    rich = {**env, "IMAGINE_API_KEY": key}
    assert imagine("status", "t_unknown", env=rich).returncode == EXIT_ERROR
    wrong_option = imagine("generate", "x", "--option", "aspect_ratio", env=rich)
    assert wrong_option.returncode == EXIT_USAGE
    assert "key=value" in wrong_option.stderr
    assert imagine("generate", "--no-such-flag", env=rich).returncode == EXIT_USAGE

    unreachable = imagine("balance", env={"IMAGINE_BASE_URL": f"http://127.0.0.1:{free_port()}",
                                          "IMAGINE_API_KEY": key})  # fmt: skip
    assert unreachable.returncode == EXIT_UNREACHABLE
    assert "imagine serve" in unreachable.stderr

    slow = {"IMAGINE_BASE_URL": slow_server.url, "IMAGINE_API_KEY": new_key(slow_server.url)["key"]}
    timed_out = imagine("generate", "slow", "--wait", "--timeout", "1", env=slow)
    assert timed_out.returncode == EXIT_TIMEOUT
    assert "still IN_PROGRESS" in timed_out.stderr

    # The slow server never renders: the task fails at its deadline, and is refunded.
    failed = imagine("generate", "doomed", "--wait", "--json", env=slow)
    assert failed.returncode == EXIT_TASK_FAILED, failed.stderr
    ended = json.loads(failed.stdout)
    assert ended["status"] == "FAILED"
    assert ended["consumed_credits"] == 0


def test_cancel(slow_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_BASE_URL", slow_server.url)
    monkeypatch.setenv("IMAGINE_API_KEY", new_key(slow_server.url)["key"])
    task = cli_json("generate", "never mind")
    cancelled = cli_json("cancel", task["task_id"])
    assert cancelled["status"] == "FAILED"
    assert cli("cancel", task["task_id"]).exit_code == EXIT_ERROR  # it has ended: 409


def test_help_lists_the_exit_codes() -> None:
    shown = cli("generate", "--help")
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {' '.join(meaning.split())}" in text

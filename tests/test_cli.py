"""The `imagine` command as an operator uses it: keys, credits, the first start."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import auth, create_task, text_to_image
from tests.support.server import ServerProcess, free_port


def imagine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=60,
    )


def imagine_json(*args: str) -> Any:
    done = imagine(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_keys_and_credits_round_trip(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "d")
    created = imagine_json(
        "keys", "create", "--name", "alice", "--credits", "40", "--data-dir", data_dir
    )
    assert set(created) >= {"key", "account_id", "balance"}
    assert created["balance"] == 40
    assert created["key"].startswith("im_")

    listed = imagine_json("keys", "list", "--data-dir", data_dir)
    assert [row["name"] for row in listed] == ["alice"]
    assert created["key"] not in json.dumps(listed)
    table = imagine("keys", "list", "--data-dir", data_dir)
    assert "alice" in table.stdout
    assert created["key"] not in table.stdout

    granted = imagine_json("credits", "grant", created["account_id"], "15", "--data-dir", data_dir)
    assert granted == {"account_id": created["account_id"], "balance": 55}
    shown = imagine_json("credits", "show", created["key_id"], "--data-dir", data_dir)
    assert shown["balance"] == 55
    assert [(row["kind"], row["amount"]) for row in shown["ledger"]] == [
        ("grant", 15),
        ("grant", 40),
    ]
    # Negative amounts take credits back; `--` keeps them from reading as options.
    taken = imagine(
        "credits", "grant", "--json", "--data-dir", data_dir, "--", created["account_id"], "-5"
    )
    assert json.loads(taken.stdout)["balance"] == 50
    too_much = imagine(
        "credits", "grant", "--data-dir", data_dir, "--", created["account_id"], "-500"
    )
    assert too_much.returncode == 1
    assert "can't go below zero" in too_much.stderr


def test_revoked_key_gets_401_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    with ServerProcess(data_dir) as server:
        created = imagine_json(
            "keys", "create", "--name", "bob", "--credits", "10", "--data-dir", str(data_dir)
        )
        create_task(server.url, created["key"], text_to_image())
        revoked = imagine("keys", "revoke", created["key_id"], "--data-dir", str(data_dir))
        assert revoked.returncode == 0, revoked.stderr
        answer = httpx.post(
            f"{server.url}/api/generate", json=text_to_image(), headers=auth(created["key"])
        )
        assert answer.status_code == 401
        assert answer.json() == {
            "code": 401,
            "message": "invalid API key: it is unknown or was revoked",
            "data": None,
        }
        listed = imagine_json("keys", "list", "--data-dir", str(data_dir))
        assert next(r for r in listed if r["key_id"] == created["key_id"])["revoked_at"]


def test_unknown_key_or_account_is_a_clear_error(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "d")
    missing = imagine("keys", "revoke", "key_nope", "--data-dir", data_dir)
    assert missing.returncode == 1
    assert "key key_nope not found" in missing.stderr
    account = imagine("credits", "show", "acc_nope", "--data-dir", data_dir)
    assert account.returncode == 1
    assert "account acc_nope not found" in account.stderr


def test_bad_settings_stop_the_start_with_one_line(tmp_path: Path) -> None:
    for env, variable in (
        ({"IMAGINE_PREVIEW_DELAY": "soon"}, "IMAGINE_PREVIEW_DELAY"),
        ({"IMAGINE_DATABASE_URL": "mysql://x/y"}, "IMAGINE_DATABASE_URL"),
        ({"IMAGINE_PUBLIC_URL": "example.com"}, "IMAGINE_PUBLIC_URL"),
        ({"IMAGINE_PROVIDER": "nobody"}, "IMAGINE_PROVIDER"),
        ({"IMAGINE_DATABASE_POOL_SIZE": "0"}, "IMAGINE_DATABASE_POOL_SIZE"),
    ):
        done = imagine("serve", "--data-dir", str(tmp_path / "d"), env=env)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: invalid setting {variable}:"), lines[0]


def test_first_start_prints_a_key_and_a_curl_line_that_works(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imagine",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "fresh"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "IMAGINE_PREVIEW_DELAY": "0"},
        )
    try:
        curl_line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"^\s*(curl -s \S+/api/generate .*)$", log.read_text(), re.M)
            if found and "Application startup complete" in log.read_text():
                curl_line = found.group(1)
                break
            time.sleep(0.2)
        assert curl_line, log.read_text()
        assert "1000 credits" in log.read_text()
        done = subprocess.run(["bash", "-c", curl_line], capture_output=True, text=True, timeout=30)
        answer = json.loads(done.stdout)
        assert answer["code"] == 200
        assert answer["data"]["status"] == "IN_PROGRESS"
    finally:
        process.terminate()
        stopped = process.wait(timeout=30)
    assert stopped == 0, "a stop by SIGTERM is a clean exit"
    # A second start on the same data dir makes no new key.
    again = imagine_json("keys", "list", "--data-dir", str(tmp_path / "fresh"))
    assert [row["name"] for row in again] == ["development"]


def test_a_later_start_says_how_to_make_a_key_as_it_can_be_pasted(tmp_path: Path) -> None:
    # Started as `make serve` starts it: the venv's `imagine`, which is not on the PATH.
    data_dir = tmp_path / "data"
    imagine("keys", "create", "--name", "first", "--data-dir", str(data_dir))
    command = Path(sys.prefix) / "bin" / "imagine"
    venv_bin = str(command.parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path, "IMAGINE_PREVIEW_DELAY": "0"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(command), "serve", "--port", str(free_port()), "--data-dir", str(data_dir)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        hint = ""
        deadline = time.monotonic() + 60
        while not hint and time.monotonic() < deadline:
            found = re.search(r"Create a key with:\s+(.+)$", log.read_text(), re.M)
            hint = found.group(1).strip() if found else ""
            time.sleep(0.2)
        assert hint, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert hint.split()[0] != "imagine"  # not on the PATH: the path it was started by
    done = subprocess.run(
        ["bash", "-c", hint], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    names = [row["name"] for row in imagine_json("keys", "list", "--data-dir", str(data_dir))]
    assert sorted(names) == ["first", "me"]


def test_a_taken_port_stops_the_start_before_anything_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = imagine("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 3
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"can't listen on 127.0.0.1:{port}" in line
    assert "--port" in line
    assert not (tmp_path / "d").exists()  # no database, no key shown "only this once"


def test_keys_list_is_never_cut_when_piped(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "d")
    made = [
        imagine_json(
            "keys",
            "create",
            "--name",
            f"a rather long key name {n}",
            "--credits",
            "1",
            "--data-dir",
            data_dir,
        )
        for n in range(2)
    ]
    listed = imagine("keys", "list", "--data-dir", data_dir, env={"COLUMNS": "40"})
    assert listed.returncode == 0, listed.stderr
    for key in made:
        assert key["key_id"] in listed.stdout
        assert key["account_id"] in listed.stdout
    assert "…" not in listed.stdout

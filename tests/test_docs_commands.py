"""Every command the README and docs/ print runs as printed, after the two set-up commands.

Each shell block is run, in a folder that looks like a checkout (`.venv/` is there),
against a server of its own on the address the docs name, with the placeholders the docs
use (`im_...`, `t3f0c...`, `acc_...`) standing for real ones; an envelope with an error
code fails it. A block the tests can't run (it needs Docker, a GPU, an upstream account,
or it is the test suite) says why in its marker, and its `imagine`, `make` and bench
commands are still checked: the command, its subcommands and its flags must exist.
docs/quickstart.md has its own test (tests/test_quickstart.py), which checks its output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from imagine.cli import app
from tests.support.api import auth, create_task, http, new_key, wait_done
from tests.support.docs import DOCUMENTS, ROOT, Block, blocks, command_lines, like_a_checkout
from tests.support.server import ServerProcess

DOCUMENTED_URL = "http://127.0.0.1:8000"
IMAGINE = {"imagine", ".venv/bin/imagine"}
PYTHON = {"python", "python3", ".venv/bin/python", ".venv-gpu/bin/python"}
RUN_ELSEWHERE = {ROOT / "docs" / "quickstart.md"}


def _shell_blocks() -> list[Block]:
    return [block for path in DOCUMENTS for block in blocks(path, "sh")]


def _envelopes(output: str) -> list[dict[str, Any]]:
    """Every API envelope in a block's output (curl -s prints them back to back)."""
    decoder = json.JSONDecoder()
    found = []
    for start in (match.start() for match in re.finditer(r'\{"code"', output)):
        try:
            value, _ = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            continue
        found.append(value)
    return found


def test_a_block_the_tests_skip_says_why() -> None:
    for block in _shell_blocks():
        if block.not_run is not None:
            assert len(block.not_run) > 10, f"{block.where}: say why it is not run"


def test_no_command_needs_uv_on_the_path() -> None:
    # `make install` puts uv in .tools/bin when there is none on the PATH.
    for block in _shell_blocks():
        for words in command_lines(block.code):
            assert words[0] != "uv", f"{block.where}: {' '.join(words)}"


def _click_command(words: list[str]) -> tuple[Any, list[str]]:
    """The `imagine` subcommand a command line names (a click command of typer's own
    click), and the words after it."""
    command: Any = typer.main.get_command(app)
    rest = words[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def _check_imagine(words: list[str], where: str) -> None:
    command, rest = _click_command(words)
    assert not hasattr(command, "commands"), f"{where}: no such command {' '.join(words)}"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word == "--":
            break
        if word.startswith("-") and not re.fullmatch(r"-\d+", word):
            flag = word.split("=", 1)[0]
            assert flag in options, f"{where}: `{command.name}` has no {flag}"


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def _check_python(words: list[str], where: str) -> None:
    if words[1] == "-m":
        target = ["-m", words[2]]
        rest = words[3:]
    else:
        target = [words[1]]
        rest = words[2:]
    helped = subprocess.run(
        [sys.executable, *target, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, f"{where}: {' '.join(target)} --help\n{helped.stderr}"
    for word in rest:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in helped.stdout, f"{where}: {' '.join(target)} has no {flag}"


def test_the_commands_of_blocks_not_run_exist() -> None:
    targets = _make_targets()
    checked = 0
    for block in _shell_blocks():
        if block.not_run is None:
            continue
        for words in command_lines(block.code):
            if words[0] in IMAGINE:
                _check_imagine(words, block.where)
            elif words[0] == "make":
                target = next(word for word in words[1:] if "=" not in word)
                assert target in targets, f"{block.where}: make has no target {target}"
            elif words[0] in PYTHON and words[1:2] != ["-c"]:
                _check_python(words, block.where)
            else:
                continue
            checked += 1
    assert checked >= 20


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return like_a_checkout(tmp_path)


def test_the_readme_and_docs_run_as_printed(checkout: Path) -> None:
    # The server's data dir is the one the CLI commands use by default, ./imagine-data.
    with ServerProcess(checkout / "imagine-data") as server:
        user = new_key(server.url)
        to_revoke = new_key(server.url, name="to revoke")
        body = {"model": "grok-imagine/text-to-image", "input": {"prompt": "a harbour"}}
        task_id = create_task(server.url, user["key"], {**body, "public": True})
        assert wait_done(server.url, user["key"], task_id)["status"] == "SUCCESS"
        secret = http.get(f"{server.url}/api/webhook-secret", headers=auth(user["key"]))
        standing_for = {
            DOCUMENTED_URL: server.url,
            "im_...": user["key"],
            "t3f0c...": task_id,
            "acc_...": user["account_id"],
            "key_...": to_revoke["key_id"],
            "whsec_...": secret.json()["data"]["secret"],
        }
        env = {**server.env, "KEY": user["key"], "HOME": str(checkout), "COLUMNS": "200"}
        env.pop("XDG_CONFIG_HOME", None)  # no login of the machine's user is read or written
        ran = [
            block
            for path in DOCUMENTS
            if path not in RUN_ELSEWHERE
            for block in blocks(path)
            if block.not_run is None
            and (block.lang == "sh" or (block.lang == "python" and path.name == "README.md"))
        ]
        assert len(ran) >= 8
        for block in ran:
            _run(block, standing_for, env, checkout, user["key"])


def _run(
    block: Block, standing_for: dict[str, str], env: dict[str, str], cwd: Path, key: str
) -> None:
    code = block.code
    for placeholder, real in standing_for.items():
        code = code.replace(placeholder, real)
    if block.lang == "python":
        script = cwd / "block.py"
        script.write_text(code + "\n")
        command = [".venv/bin/python", str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        input=key + "\n",  # `imagine login` asks for the key
        capture_output=True,
        text=True,
        timeout=300,
    )
    shown = f"{block.where}\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, shown
    for envelope in _envelopes(done.stdout):
        assert envelope["code"] < 400, shown
    assert "Traceback" not in done.stderr, shown

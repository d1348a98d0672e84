"""docs/quickstart.md runs as printed, and docs/cli.md tells the exit codes as they are."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from imagine.cli_client import COMMANDS, EXIT_CODES
from tests.support.api import new_key
from tests.support.docs import ROOT, blocks, like_a_checkout
from tests.support.server import ServerProcess

QUICKSTART = ROOT / "docs" / "quickstart.md"
CLI_DOC = ROOT / "docs" / "cli.md"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return like_a_checkout(tmp_path)


def test_the_quickstart_runs_as_printed(server: ServerProcess, workdir: Path) -> None:
    key = new_key(server.url)["key"]
    env = {**os.environ, "IMAGINE_BASE_URL": server.url, "IMAGINE_API_KEY": key}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(workdir)  # no login of the machine's user is found or written
    found = [(block.lang, block.code) for block in blocks(QUICKSTART) if block.not_run is None]
    assert [lang for lang, _ in found] == ["sh", "sh", "python", "sh"]
    outputs = []
    for lang, code in found:
        if lang == "python":
            (workdir / "lighthouse.py").write_text(code + "\n")
            command = [".venv/bin/python", "lighthouse.py"]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        done = subprocess.run(
            command, cwd=workdir, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout)

    waited = json.loads(outputs[0])["data"]
    assert waited["status"] == "SUCCESS"
    polled = json.loads(outputs[1])["data"]
    assert polled["status"] in ("IN_PROGRESS", "SUCCESS")
    assert outputs[2].startswith("SUCCESS")
    assert outputs[3].count("SUCCESS") >= 2  # the generate, then the task list
    assert len(list((workdir / "results").iterdir())) == 2  # one from the SDK, one from the CLI


def test_the_cli_doc_lists_every_client_command_and_exit_code() -> None:
    text = CLI_DOC.read_text()
    for command in COMMANDS:
        assert f"`imagine {command.__name__}" in text, command.__name__
    rows = dict(re.findall(r"^\| (\d) \| (.+?) \|$", text, re.M))
    assert {int(code): meaning for code, meaning in rows.items()} == EXIT_CODES

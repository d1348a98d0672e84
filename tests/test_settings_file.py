"""Settings from a .env file as well as the environment (pydantic-settings reads it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagine.config import SettingsError, load_settings


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder whose .env is read (as in a checkout or a deployment folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMAGINE_ENV_FILE")
    for name in ("IMAGINE_PREVIEW_DELAY", "IMAGINE_DATA_DIR", "IMAGINE_TASK_DEADLINE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_env_file_is_read_and_the_environment_and_flags_win(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / ".env").write_text(
        "# a comment\nIMAGINE_PREVIEW_DELAY=7\nIMAGINE_TASK_DEADLINE=90\nOTHER_TOOL=x\n"
    )
    settings = load_settings()
    assert settings.preview_delay == 7
    assert settings.task_deadline == 90
    monkeypatch.setenv("IMAGINE_PREVIEW_DELAY", "3")
    assert load_settings().preview_delay == 3
    assert load_settings(data_dir=here / "flag").data_dir == here / "flag"


def test_another_file_is_named_by_imagine_env_file(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "prod.env").write_text("IMAGINE_PREVIEW_DELAY=11\n")
    monkeypatch.setenv("IMAGINE_ENV_FILE", str(here / "prod.env"))
    assert load_settings().preview_delay == 11


def test_a_bad_value_in_the_file_is_told_by_its_name(here: Path) -> None:
    (here / ".env").write_text("IMAGINE_PREVIEW_DELAY=soon\n")
    with pytest.raises(SettingsError, match="IMAGINE_PREVIEW_DELAY"):
        load_settings()


def test_the_command_reads_the_env_file_of_its_folder(here: Path) -> None:
    (here / ".env").write_text("IMAGINE_DATA_DIR=from-dotenv\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "imagine", "keys", "create", "--name", "a", "--json"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "a"
    assert (here / "from-dotenv").is_dir()

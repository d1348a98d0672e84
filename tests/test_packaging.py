"""What an install brings: the embedded default needs no extra, the version has one source."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

import imagine
from tests.support.docs import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(line).name for line in requirements}


def test_fleet_drivers_are_extras_not_dependencies() -> None:
    project = PYPROJECT["project"]
    core = _names(project["dependencies"])
    assert not core & {"redis", "asyncpg", "torch", "diffusers"}
    assert "uvicorn" in core
    assert all(
        not Requirement(line).extras for line in project["dependencies"] if "uvicorn" in line
    ), "uvicorn[standard] brings websockets, watchfiles and python-dotenv, used by nothing"
    extras = project["optional-dependencies"]
    assert _names(extras["redis"]) == {"redis"}
    assert _names(extras["postgres"]) == {"asyncpg"}


_WITHOUT_EXTRAS = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    # As where the extras are not installed: these can't be imported.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "asyncpg", "torch", "diffusers"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def test_the_embedded_default_needs_no_extra() -> None:
    # A fresh process without the extras: the server, its worker and every provider, as
    # `imagine serve` loads them, and the providers found by name.
    code = _WITHOUT_EXTRAS + (
        "from imagine.config import Settings\n"
        "from imagine.api.app import create_app\n"
        "import imagine.runtime, imagine.worker, imagine.webhook_sender\n"
        "from imagine.providers.registry import provider_names\n"
        "create_app(Settings(_env_file=None), public_url='http://127.0.0.1:8000')\n"
        "print(' '.join(provider_names()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kie", "local", "preview", "xai"]


def test_a_fleet_setting_without_its_extra_says_which_to_install() -> None:
    code = _WITHOUT_EXTRAS + (
        "from imagine.config import Settings, SettingsError, load_settings\n"
        "try:\n"
        "    load_settings()\n"
        "except SettingsError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "IMAGINE_REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'imagine[redis]'" in done.stdout


def test_the_version_has_one_source() -> None:
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert importlib.metadata.version("imagine") == imagine.__version__
    assert (ROOT / "src" / "imagine" / "py.typed").exists()

"""What an install brings: the embedded default needs no extra, the version has one source."""

from __future__ import annotations

import importlib.metadata
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


def test_the_embedded_default_imports_no_fleet_driver() -> None:
    # A fresh process: the server, its worker and every provider, as `imagine serve` loads them.
    code = (
        "import sys\n"
        "from imagine.config import Settings\n"
        "from imagine.api.app import create_app\n"
        "import imagine.runtime, imagine.worker, imagine.webhook_sender\n"
        "import imagine.providers.kie, imagine.providers.xai, imagine.providers.preview\n"
        "create_app(Settings(_env_file=None), public_url='http://127.0.0.1:8000')\n"
        "print(sorted({'redis', 'asyncpg', 'torch'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_version_has_one_source() -> None:
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert importlib.metadata.version("imagine") == imagine.__version__
    assert (ROOT / "src" / "imagine" / "py.typed").exists()

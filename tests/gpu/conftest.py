"""The local provider's tests, and their tiny pipelines and servers.

They need torch and diffusers (the `gpu` extra), which the main environment doesn't
have: `make test-gpu` builds `.venv-gpu` and runs them there. Without them each module
is skipped, saying so; where they must run (`make test-gpu`, which sets
IMAGINE_TEST_GPU, or CI) a missing package fails the run instead. Nothing here imports
torch at import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

MISSING = [
    name
    for name in ("torch", "diffusers", "transformers")
    if importlib.util.find_spec(name) is None
]
MESSAGE = (
    f"{', '.join(MISSING)} not importable: the local provider's tests run in .venv-gpu "
    "(make test-gpu)"
)


class WithoutExtra(pytest.Module):
    """A test module that can't be imported here: skipped, or failed where it must run."""

    def collect(self) -> Any:
        if os.environ.get("IMAGINE_TEST_GPU") or os.environ.get("CI"):
            raise self.CollectError(MESSAGE)
        pytest.skip(MESSAGE)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    if MISSING:
        return WithoutExtra.from_parent(parent, path=module_path)
    return None


FAST = json.dumps({"num_inference_steps": 2})


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny pipeline, saved once per session: family name -> folder."""
    from tests.gpu import tiny

    root = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():
        # diffusers' and transformers' own deprecation notices, about their own classes.
        warnings.simplefilter("ignore")
        return {name: build(root / name) for name, build in tiny.FAMILIES.items()}


def local_env(models: dict[str, Path], **folders: str) -> dict[str, str]:
    """A server on the local provider, on the CPU, at sizes tiny models make in
    milliseconds; `folders`: model kind -> family (text_to_image="sdxl")."""
    env = {
        "IMAGINE_PROVIDER": "local",
        "IMAGINE_LOCAL_DEVICE": "cpu",
        "IMAGINE_LOCAL_IMAGE_SIDE": "64",
        "IMAGINE_LOCAL_VIDEO_SIDES": json.dumps({"480p": 32, "720p": 64}),
        "IMAGINE_LOCAL_FPS": "4",
    }
    for kind, family in folders.items():
        env[f"IMAGINE_LOCAL_{kind.upper()}_MODEL"] = str(models[family])
        env[f"IMAGINE_LOCAL_{kind.upper()}_ARGS"] = FAST
    return env


ALL_KINDS = {
    "text_to_image": "sdxl",
    "upscale": "x4",
    "image_to_video": "svd",
    "text_to_video": "ltx",
}


@pytest.fixture(scope="module")
def local_server(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`imagine serve` with every model kind on a tiny local model."""
    env = local_env(models, **ALL_KINDS)
    # Long enough that tasks created one after another share a pipeline call.
    env["IMAGINE_LOCAL_BATCH_WAIT"] = "0.5"
    with ServerProcess(tmp_path_factory.mktemp("local"), env) as running:
        yield running

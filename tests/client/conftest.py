from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagine.client import Client
from tests.support.server import ServerProcess

SLOW_DEADLINE = 4
"""Seconds a task of the slow server lives: it never renders, so it fails at the deadline."""


@pytest.fixture(autouse=True)
def _no_user_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing of the machine's user (login file, IMAGINE_API_KEY) leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("IMAGINE_API_KEY", raising=False)
    monkeypatch.delenv("IMAGINE_BASE_URL", raising=False)


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Tasks that stay IN_PROGRESS (to cancel, to time out on), then fail at a deadline."""
    env = {"IMAGINE_PREVIEW_DELAY": "60", "IMAGINE_TASK_DEADLINE": str(SLOW_DEADLINE)}
    with ServerProcess(tmp_path_factory.mktemp("slow"), env) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess, key: str) -> Iterator[Client]:
    with Client(api_key=key, base_url=server.url) as made:
        yield made

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess

_PRINTED_KEY = re.compile(r"^\s+(im_[A-Za-z0-9_-]+)\s*$", re.MULTILINE)


@pytest.fixture(scope="session")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server as it starts out of the box: IMAGINE_ADMIN_TOKEN unset (no admin API),
    private addresses refused, the preview engine without delay."""
    running = ServerProcess(tmp_path_factory.mktemp("bare"), {"IMAGINE_PREVIEW_DELAY": "0"})
    del running.env["IMAGINE_ADMIN_TOKEN"]
    with running:
        yield running


@pytest.fixture(scope="session")
def bare_key(bare_server: ServerProcess) -> str:
    """The development key the first start printed (1000 credits)."""
    found = _PRINTED_KEY.search(bare_server.log())
    assert found is not None, bare_server.log()
    return found.group(1)


@pytest.fixture(scope="session")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without a background worker (the admin API on): tasks advance only while
    a separate worker runs on its database (`worker_env`)."""
    running = ServerProcess(tmp_path_factory.mktemp("quiet"), {"IMAGINE_PREVIEW_DELAY": "0"})
    running.no_worker = True
    with running:
        yield running

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3 import MotoServer


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3-compatible server for the session; each test makes its own bucket."""
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as running:
        yield running


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.create_bucket()

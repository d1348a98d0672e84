"""The checked downloader against real loopback servers: names and redirects that lead to
private addresses are refused, and the address checked is the address connected to."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from imagine.fetch import Fetcher
from imagine.providers.base import ProviderError
from imagine.storage import LocalStorage
from tests.support.images import image_server


def _fetcher(tmp_path: Path, *, allow_private: bool = False) -> Fetcher:
    return Fetcher(
        LocalStorage(tmp_path, "http://imagine.test"),
        user_agent="test",
        allow_private=allow_private,
        max_source_bytes=1_000_000,
        max_result_bytes=1_000_000,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/cat.png",
        "http://[::1]:9/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/cat.png",
        "http://localhost:9/cat.png",  # a name that resolves to loopback
        "http://[::ffff:10.0.0.1]/cat.png",  # IPv4-mapped
        "http://[64:ff9b::7f00:1]/cat.png",  # NAT64 of 127.0.0.1
        "http://[2002:a00:1::]/cat.png",  # 6to4 of 10.0.0.1
    ],
)
async def test_private_addresses_are_refused(tmp_path: Path, url: str) -> None:
    fetcher = _fetcher(tmp_path)
    try:
        with pytest.raises(ProviderError) as refused:
            await fetcher.source_image(url, "account")
    finally:
        await fetcher.aclose()
    assert refused.value.retryable is False
    assert "private or reserved address" in refused.value.message


async def test_a_redirect_inward_is_refused_at_the_next_hop(tmp_path: Path) -> None:
    with image_server() as images:
        host, port = images.removeprefix("http://").split(":")
        fetcher = _fetcher(tmp_path)
        fetcher.trust({host})  # a provider's host: its results may be fetched
        try:
            assert (await fetcher.result(f"{images}/cat.png")).data.startswith(b"\x89PNG")
            # ... but users' source URLs get no such trust.
            with pytest.raises(ProviderError) as untrusted:
                await fetcher.source_image(f"{images}/cat.png", "account")
            assert "private or reserved address" in untrusted.value.message
            inward = quote(f"http://localhost:{port}/cat.png", safe="")
            with pytest.raises(ProviderError) as refused:
                await fetcher.result(f"{images}/redirect-to/{inward}")
        finally:
            await fetcher.aclose()
    assert refused.value.retryable is False
    assert "private or reserved address (the host 'localhost')" in refused.value.message


async def test_allowing_private_addresses_lets_them_through(tmp_path: Path) -> None:
    with image_server() as images:
        port = images.rsplit(":", 1)[1]
        fetcher = _fetcher(tmp_path, allow_private=True)
        try:
            data = await fetcher.source_image(f"http://localhost:{port}/cat.png", "account")
        finally:
            await fetcher.aclose()
    assert data.startswith(b"\x89PNG")

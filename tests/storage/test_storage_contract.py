"""Both storages keep the one contract: save, read our own URLs, stat, stream by range."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from imagine.providers.base import Artifact
from imagine.storage import LocalStorage, S3Storage, Storage, StorageError
from tests.support.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.support.server import free_port

SERVER = "https://imagine.test"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"v" * 3000


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)


@pytest.fixture(params=["local", "s3"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, moto: MotoServer, credentials: None
) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "files", SERVER)
    else:
        yield _s3(moto, moto.create_bucket())


def _s3(moto: MotoServer, bucket: str, **modes: object) -> S3Storage:
    return S3Storage.connect(
        bucket,
        "results/v1",
        endpoint_url=moto.url,
        region=REGION,
        files_url=SERVER,
        **modes,  # type: ignore[arg-type]
    )


async def _body(storage: Storage, task_id: str, name: str, start: int, end: int) -> bytes:
    chunks = await storage.open(task_id, name, start, end)
    assert chunks is not None
    return b"".join([chunk async for chunk in chunks])


async def test_saved_results_read_back_by_their_urls(storage: Storage) -> None:
    urls = await storage.save("tabc123", [Artifact(PNG, "image/png"), Artifact(MP4, "video/mp4")])
    assert urls == [f"{SERVER}/files/tabc123/0.png", f"{SERVER}/files/tabc123/1.mp4"]
    assert all(storage.is_own(url) for url in urls)
    assert await storage.read(urls[0]) == PNG
    assert await storage.read(urls[1]) == MP4
    # Not ours: never read, whatever the path looks like.
    assert not storage.is_own("https://elsewhere.test/files/tabc123/0.png")
    assert await storage.read("https://elsewhere.test/files/tabc123/0.png") is None
    # Ours, but gone (or never made).
    assert await storage.read(f"{SERVER}/files/tabc123/7.png") is None


async def test_files_stream_whole_or_by_range(storage: Storage) -> None:
    await storage.save("tr1", [Artifact(PNG, "image/png")])
    info = await storage.stat("tr1", "0.png")
    assert info is not None
    assert (info.size, info.content_type) == (len(PNG), "image/png")
    assert info.etag
    assert await _body(storage, "tr1", "0.png", 0, len(PNG)) == PNG
    assert await _body(storage, "tr1", "0.png", 10, 20) == PNG[10:20]
    assert await _body(storage, "tr1", "0.png", len(PNG) - 5, len(PNG)) == PNG[-5:]
    assert await storage.stat("tr1", "9.png") is None
    assert await storage.open("tr1", "9.png", 0, 1) is None


@pytest.mark.parametrize(
    ("task_id", "name"),
    [("..", "imagine.db"), ("tr1", "../0.png"), ("tr1/..", "0.png"), ("tr1", ".0.png.partial")],
)
async def test_names_we_never_write_are_no_files(storage: Storage, task_id: str, name: str) -> None:
    await storage.save("tr1", [Artifact(PNG, "image/png")])
    assert await storage.stat(task_id, name) is None
    assert await storage.open(task_id, name, 0, 1) is None


async def test_a_public_bucket_gives_bucket_urls_that_are_still_ours(
    moto: MotoServer, credentials: None
) -> None:
    bucket = moto.create_bucket(public=True)
    public = f"{moto.url}/{bucket}"
    storage = _s3(moto, bucket, public_url=public)
    [url] = await storage.save("tpub1", [Artifact(PNG, "image/png")])
    assert url == f"{public}/results/v1/tpub1/0.png"
    assert storage.is_own(url)
    # URLs under /files/ (made before the bucket went public) stay ours too.
    assert storage.is_own(f"{SERVER}/files/tpub1/0.png")
    assert not storage.is_own(f"{public}/other/tpub1/0.png")
    assert await storage.read(url) == PNG
    async with httpx.AsyncClient() as client:
        fetched = await client.get(url)
    assert fetched.content == PNG
    assert fetched.headers["content-type"] == "image/png"
    assert moto.object(bucket, "results/v1/tpub1/0.png") == (PNG, "image/png")


async def test_an_unreachable_bucket_fails_the_save_without_naming_secrets(
    credentials: None,
) -> None:
    storage = S3Storage.connect(
        "nowhere",
        "",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region=REGION,
        files_url=SERVER,
    )
    with pytest.raises(StorageError) as raised:
        await storage.save("tdown1", [Artifact(PNG, "image/png")])
    message = str(raised.value)
    assert message.startswith("result storage: writing tdown1/0.png failed:")
    assert SECRET_ACCESS_KEY not in message
    assert raised.value.__cause__ is None


async def test_presigning_gives_a_fresh_url_to_a_private_bucket(
    moto: MotoServer, bucket: str, credentials: None
) -> None:
    storage = _s3(moto, bucket, presign=timedelta(minutes=5))
    [url] = await storage.save("tsig1", [Artifact(PNG, "image/png")])
    # What is stored is our own URL, which never expires; the signature is made per request.
    assert url == f"{SERVER}/files/tsig1/0.png"
    signed = await storage.redirect("tsig1", "0.png")
    assert signed is not None
    assert signed.startswith(f"{moto.url}/{bucket}/results/v1/tsig1/0.png?")
    assert "X-Amz-Expires=300" in signed
    assert SECRET_ACCESS_KEY not in signed
    async with httpx.AsyncClient() as client:
        assert (await client.get(signed)).content == PNG
        unsigned = await client.get(f"{moto.url}/{bucket}/results/v1/tsig1/0.png")
        assert unsigned.status_code == 403
    assert await _s3(moto, bucket).redirect("tsig1", "0.png") is None

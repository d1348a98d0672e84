"""A server whose results live in a bucket: /files/ streams them with ranges, or the URLs
point at a public bucket, or /files/ redirects to a fresh presigned URL."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from tests.support.api import create_task, new_key, wait_done
from tests.support.s3 import SECRET_ACCESS_KEY, MotoServer
from tests.support.server import ServerProcess

MakeServer = Callable[..., ServerProcess]


def _image(server: ServerProcess, key: str, body: dict[str, Any] | None = None) -> str:
    task = body or {"model": "grok-imagine/text-to-image", "input": {"prompt": "a lighthouse"}}
    data = wait_done(server.url, key, create_task(server.url, key, task))
    assert data["status"] == "SUCCESS", data
    [url] = data["response"]["resultUrls"]
    assert isinstance(url, str)
    return url


def _size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def _no_local_files(data_dir: Path) -> None:
    files = data_dir / "files"
    assert not files.exists() or not any(files.rglob("*.png"))


def test_files_stream_from_the_bucket_with_ranges(
    make_server: MakeServer, moto: MotoServer, bucket: str
) -> None:
    server = make_server(moto.env(bucket))
    key = new_key(server.url)["key"]
    url = _image(server, key)
    assert url.startswith(f"{server.url}/files/")
    task_id, name = urlsplit(url).path.split("/")[-2:]
    stored, stored_type = moto.object(bucket, f"results/{task_id}/{name}")
    assert stored_type == "image/png"
    _no_local_files(server.data_dir)

    whole = httpx.get(url)
    assert whole.status_code == 200
    assert whole.content == stored
    assert whole.headers["content-type"] == "image/png"
    assert whole.headers["content-length"] == str(len(stored))
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"]
    assert whole.headers["last-modified"].endswith(" GMT")

    size = len(stored)
    for asked, expected, content_range in (
        ("bytes=0-9", stored[:10], f"bytes 0-9/{size}"),
        ("bytes=10-", stored[10:], f"bytes 10-{size - 1}/{size}"),
        ("bytes=-7", stored[-7:], f"bytes {size - 7}-{size - 1}/{size}"),
        (f"bytes=5-{size + 100}", stored[5:], f"bytes 5-{size - 1}/{size}"),
    ):
        part = httpx.get(url, headers={"Range": asked})
        assert part.status_code == 206, asked
        assert part.content == expected, asked
        assert part.headers["content-range"] == content_range
        assert part.headers["content-length"] == str(len(expected))
        assert part.headers["content-type"] == "image/png"

    beyond = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    unreadable = httpx.get(url, headers={"Range": "bytes=zzz"})
    assert unreadable.status_code == 400
    assert unreadable.json()["code"] == 400
    # Several ranges: the whole file, as RFC 9110 allows.
    several = httpx.get(url, headers={"Range": "bytes=0-1,4-5"})
    assert (several.status_code, several.content) == (200, stored)

    etag = whole.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    since = {"If-Modified-Since": whole.headers["last-modified"]}
    assert httpx.get(url, headers=since).status_code == 304
    stale = httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, stored)
    fresh = httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert (fresh.status_code, fresh.content) == (206, stored[:10])

    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(size)
    assert head.content == b""


def test_unknown_and_impossible_files_are_404s_in_the_envelope(
    make_server: MakeServer, moto: MotoServer, bucket: str
) -> None:
    server = make_server(moto.env(bucket))
    for path in (
        "/files/tnothing/0.png",
        "/files/tnothing/..%2F..%2Fimagine.db",
        "/files/..%2Fresults/0.png",
        "/files/t1/a/b/0.png",
        "/files/t1",
    ):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 404, path
        assert answer.json() == {"code": 404, "message": answer.json()["message"], "data": None}
        assert answer.json()["message"].startswith("not found: /files/")
    assert httpx.get(f"{server.url}/files/../imagine.db").status_code == 404
    # A NUL in a path is refused everywhere, as no name can hold one.
    nul = httpx.get(f"{server.url}/files/t1/0.png%00")
    assert (nul.status_code, nul.json()["code"]) == (400, 400)


def test_a_public_bucket_serves_the_result_urls_itself(
    make_server: MakeServer, moto: MotoServer
) -> None:
    bucket = moto.create_bucket(public=True)
    public = f"{moto.url}/{bucket}"
    server = make_server({**moto.env(bucket, "cdn/v1"), "IMAGINE_STORAGE_PUBLIC_URL": public})
    key = new_key(server.url)["key"]
    url = _image(server, key)
    task_id = urlsplit(url).path.split("/")[-2]
    assert url == f"{public}/cdn/v1/{task_id}/0.png"
    direct = httpx.get(url)
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "image/png"
    assert direct.content == moto.object(bucket, f"cdn/v1/{task_id}/0.png")[0]
    # Our own /files/ path still answers for the same file.
    assert httpx.get(f"{server.url}/files/{task_id}/0.png").content == direct.content

    # An upscale of a result in the bucket reads its source from the bucket.
    upscale = {"model": "grok-imagine/upscale", "input": {"task_id": task_id}}
    bigger = httpx.get(_image(server, key, upscale))
    width, height = _size(direct.content)
    assert _size(bigger.content) == (width * 2, height * 2)
    # ...and so does an image-to-video given the bucket URL itself.
    video = {"model": "grok-imagine/image-to-video", "input": {"image_urls": [url]}}
    data = wait_done(server.url, key, create_task(server.url, key, video))
    assert data["status"] == "SUCCESS", data
    assert data["response"]["resultUrls"][0].endswith(".mp4")


def test_presigned_mode_redirects_each_request_to_a_fresh_url(
    make_server: MakeServer, moto: MotoServer, bucket: str
) -> None:
    env = {**moto.env(bucket), "IMAGINE_STORAGE_PRESIGN_SECONDS": "120"}
    server = make_server(env)
    key = new_key(server.url)["key"]
    url = _image(server, key)
    # The stored URL is ours, so it still works long after any signature has expired.
    assert url.startswith(f"{server.url}/files/")
    task_id, name = urlsplit(url).path.split("/")[-2:]
    stored = moto.object(bucket, f"results/{task_id}/{name}")[0]

    moved = httpx.get(url)
    assert moved.status_code == 307
    assert moved.headers["cache-control"] == "no-store"
    target = moved.headers["location"]
    assert target.startswith(f"{moto.url}/{bucket}/results/{task_id}/{name}?")
    assert "X-Amz-Expires=120" in target
    assert SECRET_ACCESS_KEY not in target
    followed = httpx.get(url, follow_redirects=True)
    assert (followed.status_code, followed.content) == (200, stored)
    assert followed.headers["content-type"] == "image/png"
    part = httpx.get(url, headers={"Range": "bytes=0-9"}, follow_redirects=True)
    assert (part.status_code, part.content) == (206, stored[:10])
    # The bucket itself is private.
    assert httpx.get(f"{moto.url}/{bucket}/results/{task_id}/{name}").status_code == 403
    missing = httpx.get(f"{server.url}/files/{task_id}/5.png")
    assert missing.status_code == 404
    assert missing.json()["data"] is None


def test_a_failed_save_is_retried_until_the_bucket_takes_it(
    make_server: MakeServer, moto: MotoServer
) -> None:
    """The bucket is missing when the result is ready: the task waits (never lost, never
    failed for it), and ends SUCCESS once the bucket exists."""
    missing = "imagine-later-" + str(time.monotonic_ns())[-8:]
    server = make_server(moto.env(missing))
    key = new_key(server.url)["key"]
    task_id = create_task(server.url, key, {"input": {"prompt": "patience"}})
    deadline = time.monotonic() + 120
    while "result storage: writing" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    httpx.put(f"{moto.url}/{missing}").raise_for_status()
    data = wait_done(server.url, key, task_id)
    assert data["status"] == "SUCCESS", data
    assert httpx.get(data["response"]["resultUrls"][0]).status_code == 200
    assert SECRET_ACCESS_KEY not in server.log()

"""Results in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph...), through obstore.

Credentials come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, and the rest of the AWS chain), read by obstore itself: they
never pass through our settings, logs or messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from imagine.providers.base import Artifact
from imagine.storage.base import FileInfo, StorageError
from imagine.storage.names import FILES_PREFIX, content_type_of, result_name, split_name

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

_CHUNK = 256 * 1024
# obstore raises its own errors, and builtins for some (a missing file, a bad path).
_FAILURES = (BaseError, OSError, ValueError)


class S3Storage:
    def __init__(
        self,
        store: S3Store,
        *,
        prefix: str,
        files_url: str,
        public_url: str | None = None,
        presign: timedelta | None = None,
    ) -> None:
        self._store = store
        self._prefix = prefix.strip("/")
        self._files_url = files_url.rstrip("/") + FILES_PREFIX
        self._public_url = None if public_url is None else public_url.rstrip("/") + "/"
        self._presign = presign

    @classmethod
    def connect(
        cls,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        region: str | None,
        files_url: str,
        public_url: str | None = None,
        presign: timedelta | None = None,
    ) -> S3Storage:
        """A store for the bucket; nothing is sent until the first file is."""
        config: S3Config = {}
        if endpoint_url is not None:
            config["endpoint"] = endpoint_url
        if region is not None:
            config["region"] = region
        # Bounded, so a bucket that is down fails a step (which the worker retries) or a
        # file request (503) within seconds, not after obstore's default 3 minutes.
        client: ClientConfig = {
            "timeout": "60s",
            "connect_timeout": "5s",
            "allow_http": (endpoint_url or "").startswith("http:"),
        }
        retries: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
        store = S3Store(bucket, config=config, client_options=client, retry_config=retries)
        return cls(
            store, prefix=prefix, files_url=files_url, public_url=public_url, presign=presign
        )

    def _key(self, task_id: str, name: str) -> str:
        return f"{self._prefix}/{task_id}/{name}" if self._prefix else f"{task_id}/{name}"

    def _url(self, task_id: str, name: str) -> str:
        if self._public_url is not None:
            return self._public_url + self._key(task_id, name)
        return f"{self._files_url}{task_id}/{name}"

    def _own(self, url: str) -> tuple[str, str] | None:
        """(task_id, name) of one of our URLs: under /files/ or, when the bucket is
        public, under its public URL (both kinds stay valid if the mode changes)."""
        if url.startswith(self._files_url):
            return split_name(url[len(self._files_url) :].partition("?")[0])
        if self._public_url is not None and url.startswith(self._public_url):
            relative = url[len(self._public_url) :].partition("?")[0]
            if self._prefix:
                head = self._prefix + "/"
                if not relative.startswith(head):
                    return None
                relative = relative[len(head) :]
            return split_name(relative)
        return None

    async def save(self, task_id: str, artifacts: list[Artifact]) -> list[str]:
        names = [result_name(index, item.content_type) for index, item in enumerate(artifacts)]
        # One PUT per file: S3 makes it visible whole or not at all.
        await asyncio.gather(
            *(
                self._put(self._key(task_id, name), artifact)
                for name, artifact in zip(names, artifacts, strict=True)
            )
        )
        return [self._url(task_id, name) for name in names]

    async def _put(self, key: str, artifact: Artifact) -> None:
        try:
            await obstore.put_async(
                self._store,
                key,
                artifact.data,
                attributes={"Content-Type": artifact.content_type},
                use_multipart=False,
            )
        except _FAILURES as exc:
            raise _failure("writing", key, exc) from None

    def is_own(self, url: str) -> bool:
        return self._own(url) is not None

    async def read(self, url: str) -> bytes | None:
        found = self._own(url)
        if found is None:
            return None
        key = self._key(*found)
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except _FAILURES as exc:
            raise _failure("reading", key, exc) from None

    async def stat(self, task_id: str, name: str) -> FileInfo | None:
        if split_name(f"{task_id}/{name}") is None:
            return None
        key = self._key(task_id, name)
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return None
        except _FAILURES as exc:
            raise _failure("looking up", key, exc) from None
        return FileInfo(
            size=meta["size"],
            content_type=content_type_of(name),
            etag=meta["e_tag"],
            last_modified=meta["last_modified"],
        )

    async def open(
        self, task_id: str, name: str, start: int, end: int
    ) -> AsyncIterator[bytes] | None:
        if split_name(f"{task_id}/{name}") is None:
            return None
        if end <= start:
            return _nothing()
        key = self._key(task_id, name)
        try:
            result = await obstore.get_async(self._store, key, options={"range": (start, end)})
        except FileNotFoundError:
            return None
        except _FAILURES as exc:
            raise _failure("reading", key, exc) from None
        return _chunks(result.stream(min_chunk_size=_CHUNK), key)

    async def redirect(self, task_id: str, name: str) -> str | None:
        if self._presign is None:
            return None
        key = self._key(task_id, name)
        try:
            return await obstore.sign_async(self._store, "GET", key, self._presign)
        except _FAILURES as exc:
            raise _failure("signing", key, exc) from None


async def _chunks(stream: AsyncIterator[bytes], key: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield bytes(chunk)
    except _FAILURES as exc:
        # The answer's headers are gone already: all that is left is to cut it short.
        raise _failure("reading", key, exc) from None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


def _failure(action: str, key: str, exc: Exception) -> StorageError:
    # obstore's first line says what failed and where (method, URL, status), never the
    # credentials; the rest is a debug dump.
    reason = str(exc).split("\n", 1)[0].strip()
    return StorageError(f"result storage: {action} {key} failed: {reason}")

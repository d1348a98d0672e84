"""Results in a local folder, served under `/files/`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from imagine.providers.base import Artifact
from imagine.storage.base import FileInfo
from imagine.storage.names import FILES_PREFIX, content_type_of, result_name, split_name

_CHUNK = 256 * 1024


class LocalStorage:
    def __init__(self, root: Path, public_url: str) -> None:
        self.root = root
        self.public_url = public_url.rstrip("/")
        self._url_prefix = self.public_url + FILES_PREFIX

    async def save(self, task_id: str, artifacts: list[Artifact]) -> list[str]:
        """Store a task's results and return their absolute URLs."""
        return await asyncio.to_thread(self._save_sync, task_id, artifacts)

    def _save_sync(self, task_id: str, artifacts: list[Artifact]) -> list[str]:
        folder = self.root / task_id
        folder.mkdir(parents=True, exist_ok=True)
        urls = []
        for index, artifact in enumerate(artifacts):
            name = result_name(index, artifact.content_type)
            # Write then rename: a crash never leaves a half file under a served name.
            partial = folder / f".{name}.partial"
            partial.write_bytes(artifact.data)
            os.replace(partial, folder / name)
            urls.append(f"{self._url_prefix}{task_id}/{name}")
        return urls

    def local_path(self, url: str) -> Path | None:
        """The file behind one of our own result URLs; None for any other URL."""
        if not url.startswith(self._url_prefix):
            return None
        relative = url[len(self._url_prefix) :]
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            return None
        return path

    def is_own(self, url: str) -> bool:
        return self.local_path(url) is not None

    async def read(self, url: str) -> bytes | None:
        path = self.local_path(url)
        if path is None or not path.is_file():
            return None
        return await asyncio.to_thread(path.read_bytes)

    def _file(self, task_id: str, name: str) -> Path | None:
        if split_name(f"{task_id}/{name}") is None:
            return None
        path = self.root / task_id / name
        return path if path.is_file() else None

    async def stat(self, task_id: str, name: str) -> FileInfo | None:
        path = self._file(task_id, name)
        if path is None:
            return None
        found = await asyncio.to_thread(path.stat)
        return FileInfo(
            size=found.st_size,
            content_type=content_type_of(name),
            etag=f'"{found.st_mtime_ns:x}-{found.st_size:x}"',
            last_modified=datetime.fromtimestamp(found.st_mtime, UTC),
        )

    async def open(
        self, task_id: str, name: str, start: int, end: int
    ) -> AsyncIterator[bytes] | None:
        path = self._file(task_id, name)
        if path is None:
            return None
        handle = await asyncio.to_thread(path.open, "rb")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                await asyncio.to_thread(handle.seek, start)
                left = end - start
                while left > 0:
                    data = await asyncio.to_thread(handle.read, min(_CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                    yield data
            finally:
                handle.close()

        return chunks()

    async def redirect(self, task_id: str, name: str) -> str | None:
        return None

"""Where results live: a local folder served under `/files/`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from imagine.providers.base import Artifact

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}
FILES_PREFIX = "/files/"
CONTENT_TYPES = (*_EXTENSIONS, "application/octet-stream")
"""What `/files/` serves: the type of each stored result (`.bin` for any other type)."""


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
            extension = _EXTENSIONS.get(artifact.content_type, "bin")
            name = f"{index}.{extension}"
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

    async def read(self, url: str) -> bytes | None:
        path = self.local_path(url)
        if path is None or not path.is_file():
            return None
        return await asyncio.to_thread(path.read_bytes)

"""The one interface every result storage has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagine.providers.base import Artifact


class StorageError(Exception):
    """The storage could not do what was asked. The message names the file and what
    failed, never a credential; the worker retries a step that raises it."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    size: int
    content_type: str
    etag: str | None
    last_modified: datetime


class Storage(Protocol):
    async def save(self, task_id: str, artifacts: list[Artifact]) -> list[str]:
        """Store a task's results, each file whole or not at all; return their URLs."""
        ...

    def is_own(self, url: str) -> bool:
        """One of our result URLs: read from storage, never fetched."""
        ...

    async def read(self, url: str) -> bytes | None:
        """The bytes behind one of our URLs; None when it is not ours or is gone."""
        ...

    async def stat(self, task_id: str, name: str) -> FileInfo | None:
        """What serving `/files/<task_id>/<name>` needs to know; None: no such file."""
        ...

    async def open(
        self, task_id: str, name: str, start: int, end: int
    ) -> AsyncIterator[bytes] | None:
        """Bytes [start, end) of a file, in chunks; None: no such file."""
        ...

    async def redirect(self, task_id: str, name: str) -> str | None:
        """Where `/files/<task_id>/<name>` sends its caller instead of serving the
        bytes itself (a fresh presigned URL); None: serve them here."""
        ...

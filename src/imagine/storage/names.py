"""How a stored result is named: `<task_id>/<index>.<extension>`, the same in every storage."""

from __future__ import annotations

import re

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}
_TYPES = {extension: content_type for content_type, extension in _EXTENSIONS.items()}
FILES_PREFIX = "/files/"
CONTENT_TYPES = (*_EXTENSIONS, "application/octet-stream")
"""What `/files/` serves: the type of each stored result (`.bin` for any other type)."""

# Anything else can't be a name we wrote, so it is refused before any storage is asked:
# no dots but the extension's, no slashes, nothing to climb out of the results with.
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[0-9]{1,6}\.[a-z0-9]{1,8}")


def result_name(index: int, content_type: str) -> str:
    return f"{index}.{_EXTENSIONS.get(content_type, 'bin')}"


def content_type_of(name: str) -> str:
    return _TYPES.get(name.rpartition(".")[2], "application/octet-stream")


def split_name(relative: str) -> tuple[str, str] | None:
    """`task_id/name` as we write it, or None for any other path."""
    task_id, slash, name = relative.partition("/")
    if not slash or not _TASK_ID.fullmatch(task_id) or not _NAME.fullmatch(name):
        return None
    return task_id, name

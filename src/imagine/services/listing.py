"""Lists of tasks: the caller's history and the public gallery, newest first.

Pages are keyset-paginated: the cursor names the last task shown (its creation time and
id), so a page is one index range whatever the depth, and tasks created meanwhile never
shift what the next page holds.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from imagine import catalog
from imagine.clock import iso_z
from imagine.errors import InvalidInput, TaskNotFound
from imagine.schemas import GalleryPage, TaskPage
from imagine.services.tasks import lifecycle
from imagine.services.tasks.payloads import status_data
from imagine.states import TaskStatus
from imagine.store import tasks as repo
from imagine.store.db import Database
from imagine.store.tasks import TaskView

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES = tuple(TaskStatus)
_TASK_ID = re.compile(r"^t[0-9a-f]{1,40}$")
"""The shape of the task ids this server gives out (ids.new_task_id)."""


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """Where a page ended: its last row's creation time and id (a task's, by default)."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: str | None, ids: re.Pattern[str] = _TASK_ID
) -> tuple[datetime, str] | None:
    """The (creation time, id) of `encode_cursor`; `ids`: the shape the id must have."""
    if not cursor:
        return None
    refused = InvalidInput("cursor: not a cursor this server gave out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, row_id = raw.partition("|")
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise refused
        when = when.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise refused from None
    if not ids.fullmatch(row_id):
        raise refused
    return when, row_id


def parse_limit(value: str | None, default: int = DEFAULT_LIMIT) -> int:
    if value is None or value == "":
        return default
    # ASCII digits only ("²" is a digit to str.isdigit but not to int), and no more of
    # them than the limit has: int() refuses thousands of digits.
    digits = value.lstrip("0") or "0"
    if (
        not (value.isascii() and value.isdigit())
        or len(digits) > len(str(MAX_LIMIT))
        or not 1 <= int(digits) <= MAX_LIMIT
    ):
        raise InvalidInput(f"limit: give a whole number from 1 to {MAX_LIMIT}")
    return int(digits)


def check_status(status: str | None) -> TaskStatus | None:
    if status is not None and status not in STATUSES:
        raise InvalidInput("status: use one of " + ", ".join(STATUSES))
    return None if status is None else TaskStatus(status)


def check_model(model: str | None) -> str | None:
    if model is not None and model not in catalog.MODELS:
        raise InvalidInput(
            f"model: unknown model {model!r}; use one of " + ", ".join(catalog.MODELS)
        )
    return model


async def history_page(
    db: Database,
    account_id: str,
    *,
    status: str | None,
    model: str | None,
    cursor: str | None,
    limit: int,
) -> TaskPage:
    wanted = check_status(status)
    before = decode_cursor(cursor)
    rows = await db.read(
        lambda tx: repo.history(
            tx, account_id, status=wanted, model=check_model(model), before=before, limit=limit + 1
        )
    )
    shown = rows[:limit]
    return {
        "items": [status_data(TaskView.of(row)) for row in shown],
        "next_cursor": (
            encode_cursor(shown[-1].created_at, shown[-1].id) if len(rows) > limit else None
        ),
    }


async def gallery_page(
    db: Database, *, model: str | None, cursor: str | None, limit: int
) -> GalleryPage:
    """Public, finished tasks: what they show, nothing about who made them."""
    before = decode_cursor(cursor)
    rows = await db.read(
        lambda tx: repo.gallery(tx, model=check_model(model), before=before, limit=limit + 1)
    )
    shown = rows[:limit]
    return {
        "items": [
            {
                "task_id": row.id,
                "model": row.model,
                "prompt": (row.request.get("input") or {}).get("prompt"),
                "resultUrls": row.result_urls or [],
                "created_at": iso_z(row.created_at),
            }
            for row in shown
        ],
        "next_cursor": (
            encode_cursor(shown[-1].created_at, shown[-1].id) if len(rows) > limit else None
        ),
    }


async def unpublish(db: Database, account_id: str, task_id: str) -> None:
    if not await db.write(lambda tx: lifecycle.unpublish(tx, task_id, account_id)):
        raise TaskNotFound(task_id)

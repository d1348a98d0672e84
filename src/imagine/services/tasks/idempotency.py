"""`Idempotency-Key` on POST /api/generate: the same key with the same body within a day
gives back the key's first task and charges nothing; with another body it is refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from imagine.errors import InvalidInput
from imagine.schemas import GenerateRequest
from imagine.services.keys import Caller
from imagine.states import TaskStatus
from imagine.store.errors import ConstraintViolation
from imagine.store.idempotency import EarlierRequest

WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Created:
    task_id: str
    status: TaskStatus
    replayed: bool
    """An idempotent retry: the task created by the key's first request."""
    owner: Caller
    """Whose task it is (a create that checked the key itself says whose it was)."""


def fingerprint(request: GenerateRequest) -> str:
    body = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def replay(
    earlier: EarlierRequest, request_hash: str, now: datetime, owner: Caller
) -> Created | None:
    """The earlier task for a repeated key, None when the key has expired; raises for a
    key reused with another body."""
    if now - earlier.created_at > WINDOW:
        return None
    if earlier.request_hash != request_hash:
        raise InvalidInput(
            "Idempotency-Key: already used with a different request body; "
            "use a new key for a new request"
        )
    return Created(earlier.task_id, earlier.status, replayed=True, owner=owner)


def is_conflict(exc: Exception) -> bool:
    """A unique-key violation: two requests with one key stored at the same moment."""
    return isinstance(exc, ConstraintViolation)

"""Upstream callbacks: a provider telling us a task finished, so that nobody has to poll.

The URL the provider was given carries the task's own unguessable token; the provider
module then checks the body (and its signature, where the operator set a key). The
payload is stored on the task and the task made due, so the worker finishes it the same
way as after a poll: mirroring, retries and refunds stay in one place, and an API
process without a worker can still take callbacks.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from imagine.clock import utc_now
from imagine.errors import BadRequest, NotFound, Unauthorized
from imagine.metrics import CALLBACKS
from imagine.providers.base import CallbackReceiver, CallbackRejected
from imagine.providers.registry import ProviderRouter, UnknownProvider
from imagine.services.tasks import lifecycle
from imagine.services.tasks.lifecycle import Applied
from imagine.states import TaskStatus
from imagine.store import tasks as repo
from imagine.store.db import Database


async def receive_callback(
    db: Database,
    router: ProviderRouter,
    *,
    provider_name: str,
    task_id: str,
    token: str,
    headers: Mapping[str, str],
    body: bytes,
) -> bool:
    """Store a callback; True when the task now waits for the worker to read it, False
    when the task had already ended (a repeated callback is answered the same way)."""
    task = await db.read(lambda tx: repo.get_task(tx, task_id))
    # One answer for every wrong URL: nothing tells a guesser which part was wrong.
    unknown = NotFound("no such callback")
    if task is None or not task.callback_token or task.provider != provider_name:
        raise unknown
    if not hmac.compare_digest(task.callback_token.encode(), token.encode()):
        raise unknown
    try:
        provider = router.get(provider_name)
    except UnknownProvider:
        raise unknown from None
    if not isinstance(provider, CallbackReceiver):
        raise unknown
    if task.status is not TaskStatus.IN_PROGRESS:
        CALLBACKS.labels(provider_name, "late").inc()
        return False
    try:
        payload = provider.verify_callback(headers, body, task.upstream_id)
    except CallbackRejected as exc:
        CALLBACKS.labels(provider_name, "rejected").inc()
        raise (Unauthorized if exc.status == 401 else BadRequest)(exc.message) from None
    now = utc_now()
    result = await db.write(
        lambda tx: lifecycle.store_callback(tx, task_id, payload=payload, now=now)
    )
    stored = isinstance(result, Applied)
    CALLBACKS.labels(provider_name, "stored" if stored else "late").inc()
    return stored

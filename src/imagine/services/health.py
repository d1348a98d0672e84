"""What ops endpoints ask of the database: is it ready, and how long is the queue."""

from __future__ import annotations

import asyncio
import logging

from imagine.clock import utc_now
from imagine.metrics import QUEUE, QueueState
from imagine.store import gauges
from imagine.store.db import Database
from imagine.store.migrate import current_revision, head_revision, mismatch

logger = logging.getLogger("imagine.health")

CHECK_TIMEOUT = 5.0
"""Seconds a readiness check or a gauge read may take before it counts as failed."""


async def readiness_problem(db: Database) -> str | None:
    """None when the database answers and its schema is this version's; else what's wrong,
    in a line for the operator (the exception's details go to the log, not the answer)."""
    try:
        current = await asyncio.wait_for(current_revision(db), CHECK_TIMEOUT)
    except TimeoutError:
        return f"the database did not answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        logger.warning("readiness: the database can't be read: %s", exc)
        return f"the database can't be reached or read ({type(exc).__name__}); see the log"
    head = head_revision()
    if current != head:
        return mismatch(current, head)
    return None


async def refresh_queue_gauges(db: Database) -> None:
    """Read the queue gauges now (a scrape is about to render them); on failure they are
    left out of this scrape rather than shown stale."""
    now = utc_now()
    try:
        row = await asyncio.wait_for(
            db.read(lambda tx: gauges.queue(tx, now), snapshot=True), CHECK_TIMEOUT
        )
    except Exception as exc:
        logger.warning("metrics: reading the queue gauges failed: %s", exc)
        QUEUE.state = None
        return
    oldest = 0.0 if row.oldest_due_at is None else (now - row.oldest_due_at).total_seconds()
    QUEUE.state = QueueState(row.due, max(0.0, oldest), row.deliveries_due)

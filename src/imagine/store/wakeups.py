"""Wake-ups: "work became due" and "a delivery became due", told to whoever waits.

A transition that makes something due announces it on its transaction
(`tx.announce(Due.WORK)`); the database tells this process's waiters once the
transaction has committed, never before (a waiter woken early would find nothing) and
never for a transaction that rolled back. Waiters still look on their own every poll
interval, so a wake-up is a shortcut, never the only way work is found.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum


class Due(StrEnum):
    WORK = "work"
    """A task became due: created, or a callback arrived for it."""
    DELIVERY = "delivery"
    """A webhook delivery was queued, or put back to be tried again at once."""


def wakeup_channel(due: Due) -> str:
    """The PostgreSQL NOTIFY channel of `due`, heard by every process of a fleet."""
    return f"imagine_{due.value}"


class Wakeups:
    def __init__(self) -> None:
        self._waiting: dict[Due, list[asyncio.Event]] = {due: [] for due in Due}

    def subscribe(self, due: Due) -> asyncio.Event:
        """An event set each time `due` is announced; the subscriber clears it."""
        event = asyncio.Event()
        self._waiting[due].append(event)
        return event

    def notify(self, due: Due) -> None:
        for event in self._waiting[due]:
            event.set()

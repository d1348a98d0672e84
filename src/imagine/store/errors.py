"""What a database job can fail with, whichever engine runs it."""

from __future__ import annotations


class DatabaseBusy(Exception):
    """The database is locked by another process for too long, or can't be reached right
    now; the request may be retried later (503)."""


class ValueRefused(Exception):
    """The database refused a value (a character or number it can't store: SQLSTATE
    class 22), which is the request's fault, not the server's (422)."""


class ConstraintViolation(Exception):
    """A write broke a unique or foreign-key constraint (a second debit of one task, two
    requests storing one idempotency key at once): its transaction stored nothing."""

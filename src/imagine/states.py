"""The states a task and a webhook delivery can be in, as the database stores them."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A task's status, as the API document names it. SUCCESS and FAILED are final."""

    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class LedgerKind(StrEnum):
    """Why a balance moved."""

    GRANT = "grant"
    ADJUSTMENT = "adjustment"
    """Credits taken back by the operator."""
    DEBIT = "debit"
    REFUND = "refund"


class DeliveryStatus(StrEnum):
    """A webhook delivery's status. Only `pending` deliveries are ever sent."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"
    """The receiver answered 410 Gone: it wants no more deliveries of this one."""

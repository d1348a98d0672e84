"""The credit ledger: every balance change is a ledger row in the same transaction."""

from __future__ import annotations

from datetime import datetime

from imagine.errors import AccountNotFound, InsufficientCredits, InvalidInput
from imagine.states import LedgerKind
from imagine.store import accounts as repo
from imagine.store.db import Tx


async def debit_task(
    tx: Tx, *, account_id: str, task_id: str, amount: int, model: str, now: datetime
) -> int:
    balance = await repo.change_balance(tx, account_id=account_id, delta=-amount, now=now)
    if balance is None:
        raise await insufficient(tx, account_id, model, amount)
    await repo.insert_ledger(
        tx,
        account_id=account_id,
        kind=LedgerKind.DEBIT,
        amount=-amount,
        balance_after=balance,
        task_id=task_id,
        now=now,
    )
    return balance


async def insufficient(tx: Tx, account_id: str, model: str, amount: int) -> InsufficientCredits:
    """The 402 of a debit the balance couldn't cover, with the balance as it is now."""
    current = await repo.get_balance(tx, account_id) or 0
    return InsufficientCredits(
        f"insufficient credits: {model} costs {amount} and the balance is {current}; "
        "ask the operator for more credits"
    )


async def refund_task(tx: Tx, *, account_id: str, task_id: str, amount: int, now: datetime) -> int:
    balance = await repo.change_balance(tx, account_id=account_id, delta=amount, now=now)
    if balance is None:
        raise AccountNotFound(account_id)
    # The (task_id, kind) unique constraint makes a second refund fail the transaction.
    await repo.insert_ledger(
        tx,
        account_id=account_id,
        kind=LedgerKind.REFUND,
        amount=amount,
        balance_after=balance,
        task_id=task_id,
        now=now,
    )
    return balance


async def grant(tx: Tx, *, account_id: str, amount: int, note: str | None, now: datetime) -> int:
    """Add credits (or take them back with a negative amount, never below zero)."""
    if amount == 0:
        raise InvalidInput("amount: must not be zero")
    if not await repo.account_exists(tx, account_id):
        raise AccountNotFound(account_id)
    balance = await repo.change_balance(tx, account_id=account_id, delta=amount, now=now)
    if balance is None:
        current = await repo.get_balance(tx, account_id) or 0
        raise InvalidInput(f"amount: the balance is {current}; it can't go below zero")
    await repo.insert_ledger(
        tx,
        account_id=account_id,
        kind=LedgerKind.GRANT if amount > 0 else LedgerKind.ADJUSTMENT,
        amount=amount,
        balance_after=balance,
        note=note,
        now=now,
    )
    return balance

"""Accounts, API keys and the credit ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagine.store.schema import accounts, api_keys, ledger


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    account_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    balance: int


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: int
    kind: str
    amount: int
    balance_after: int
    task_id: str | None
    note: str | None
    created_at: datetime


async def insert_account(
    conn: AsyncConnection, *, account_id: str, name: str, now: datetime
) -> None:
    await conn.execute(
        insert(accounts).values(id=account_id, name=name, balance=0, created_at=now, updated_at=now)
    )


async def count_accounts(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(accounts))).scalar_one())


async def account_exists(conn: AsyncConnection, account_id: str) -> bool:
    found = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
    return found.first() is not None


async def get_balance(conn: AsyncConnection, account_id: str) -> int | None:
    found = await conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id))
    value = found.scalar_one_or_none()
    return None if value is None else int(value)


async def change_balance(
    conn: AsyncConnection, *, account_id: str, delta: int, now: datetime
) -> int | None:
    """Add `delta` (may be negative) unless that would take the balance below zero.

    One conditional UPDATE, so concurrent debits can never overspend: the database
    serializes them and each sees the balance the previous one left. Returns the new
    balance, or None when the account is missing or can't cover the change.
    """
    result = await conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.balance + delta >= 0)
        .values(balance=accounts.c.balance + delta, updated_at=now)
        .returning(accounts.c.balance)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


async def insert_ledger(
    conn: AsyncConnection,
    *,
    account_id: str,
    kind: str,
    amount: int,
    balance_after: int,
    now: datetime,
    task_id: str | None = None,
    note: str | None = None,
) -> None:
    await conn.execute(
        insert(ledger).values(
            account_id=account_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            task_id=task_id,
            note=note,
            created_at=now,
        )
    )


async def ledger_sum(conn: AsyncConnection, account_id: str) -> int:
    total = await conn.execute(
        select(func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.account_id == account_id)
    )
    return int(total.scalar_one())


async def recent_ledger(conn: AsyncConnection, account_id: str, limit: int) -> list[LedgerRow]:
    rows = await conn.execute(
        select(
            ledger.c.id,
            ledger.c.kind,
            ledger.c.amount,
            ledger.c.balance_after,
            ledger.c.task_id,
            ledger.c.note,
            ledger.c.created_at,
        )
        .where(ledger.c.account_id == account_id)
        .order_by(ledger.c.id.desc())
        .limit(limit)
    )
    return [LedgerRow(**row._mapping) for row in rows]


async def insert_key(
    conn: AsyncConnection,
    *,
    key_id: str,
    account_id: str,
    name: str,
    key_hash: str,
    prefix: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(api_keys).values(
            id=key_id,
            account_id=account_id,
            name=name,
            key_hash=key_hash,
            prefix=prefix,
            created_at=now,
        )
    )


_key_columns: tuple[Any, ...] = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    accounts.c.balance,
)


async def find_active_key(conn: AsyncConnection, key_hash: str) -> tuple[str, str] | None:
    """(key id, account id) of an unrevoked key with this hash: the hot path of every call."""
    found = await conn.execute(
        select(api_keys.c.id, api_keys.c.account_id).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
        )
    )
    row = found.first()
    return None if row is None else (row[0], row[1])


async def get_key(conn: AsyncConnection, key_id: str) -> KeyRow | None:
    found = await conn.execute(
        select(*_key_columns)
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .where(api_keys.c.id == key_id)
    )
    row = found.first()
    return None if row is None else KeyRow(**row._mapping)


async def find_key_by_hash(conn: AsyncConnection, key_hash: str) -> KeyRow | None:
    found = await conn.execute(
        select(*_key_columns)
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .where(api_keys.c.key_hash == key_hash)
    )
    row = found.first()
    return None if row is None else KeyRow(**row._mapping)


async def list_keys(conn: AsyncConnection) -> list[KeyRow]:
    rows = await conn.execute(
        select(*_key_columns)
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [KeyRow(**row._mapping) for row in rows]


async def revoke_key(conn: AsyncConnection, key_id: str, now: datetime) -> bool:
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1

"""Accounts, API keys and the credit ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, bindparam, func, insert, select, update

from imagine.states import LedgerKind
from imagine.store.db import Tx
from imagine.store.query import Batching, Cursor, Query, cursor_params, older_than_cursor
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
    kind: LedgerKind
    amount: int
    balance_after: int
    task_id: str | None
    note: str | None
    created_at: datetime


_insert_account = Query(
    insert(accounts).values(
        id=bindparam("account_id"),
        name=bindparam("name"),
        balance=0,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)
_count_accounts = Query(select(func.count()).select_from(accounts))
_balance = Query(select(accounts.c.balance).where(accounts.c.id == bindparam("account_id")))
# One conditional statement: concurrent debits are serialized by the database and each
# sees the balance the previous one left, so none can overspend.
_change_balance = Query(
    update(accounts)
    .where(
        accounts.c.id == bindparam("account_id"),
        accounts.c.balance + bindparam("delta") >= 0,
    )
    .values(balance=accounts.c.balance + bindparam("delta"), updated_at=bindparam("now"))
    .returning(accounts.c.balance)
)
_insert_ledger = Query(
    insert(ledger).values(
        account_id=bindparam("account_id"),
        kind=bindparam("kind"),
        amount=bindparam("amount"),
        balance_after=bindparam("balance_after"),
        task_id=bindparam("task_id"),
        note=bindparam("note"),
        created_at=bindparam("now"),
    )
)
_recent_ledger = Query(
    select(
        ledger.c.id,
        ledger.c.kind,
        ledger.c.amount,
        ledger.c.balance_after,
        ledger.c.task_id,
        ledger.c.note,
        ledger.c.created_at,
    )
    .where(ledger.c.account_id == bindparam("account_id"))
    .order_by(ledger.c.id.desc())
    .limit(bindparam("limit"))
)
_insert_key = Query(
    insert(api_keys).values(
        id=bindparam("key_id"),
        account_id=bindparam("account_id"),
        name=bindparam("name"),
        key_hash=bindparam("key_hash"),
        prefix=bindparam("prefix"),
        created_at=bindparam("now"),
    )
)
# Every call checks a key, so checks that arrive together share a round trip.
_active_key = Query(
    select(api_keys.c.id, api_keys.c.account_id, api_keys.c.key_hash).where(
        api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
    ),
    batching=Batching(key=("key_hash",)),
)
_keys = select(
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    accounts.c.balance,
).join(accounts, accounts.c.id == api_keys.c.account_id)
_key_by_id = Query(_keys.where(api_keys.c.id == bindparam("key_id")))
_key_by_hash = Query(_keys.where(api_keys.c.key_hash == bindparam("key_hash")))
_all_keys = Query(_keys.order_by(api_keys.c.created_at, api_keys.c.id))
_revoke_key = Query(
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
)


async def insert_account(tx: Tx, *, account_id: str, name: str, now: datetime) -> None:
    await tx.run(_insert_account, {"account_id": account_id, "name": name, "now": now})


async def count_accounts(tx: Tx) -> int:
    row = await tx.one(_count_accounts)
    assert row is not None
    return int(next(iter(row.values())))


async def get_balance(tx: Tx, account_id: str) -> int | None:
    row = await tx.one(_balance, {"account_id": account_id})
    return None if row is None else int(row["balance"])


async def account_exists(tx: Tx, account_id: str) -> bool:
    return await get_balance(tx, account_id) is not None


async def change_balance(tx: Tx, *, account_id: str, delta: int, now: datetime) -> int | None:
    """Add `delta` (may be negative) unless the balance would go below zero.

    Returns the new balance, or None when the account is missing or can't cover it.
    """
    row = await tx.one(_change_balance, {"account_id": account_id, "delta": delta, "now": now})
    return None if row is None else int(row["balance"])


async def insert_ledger(
    tx: Tx,
    *,
    account_id: str,
    kind: LedgerKind,
    amount: int,
    balance_after: int,
    now: datetime,
    task_id: str | None = None,
    note: str | None = None,
) -> None:
    await tx.run(
        _insert_ledger,
        {
            "account_id": account_id,
            "kind": kind,
            "amount": amount,
            "balance_after": balance_after,
            "task_id": task_id,
            "note": note,
            "now": now,
        },
    )


async def recent_ledger(tx: Tx, account_id: str, limit: int) -> list[LedgerRow]:
    rows = await tx.all(_recent_ledger, {"account_id": account_id, "limit": limit})
    return [LedgerRow(**row) for row in rows]


async def insert_key(
    tx: Tx, *, key_id: str, account_id: str, name: str, key_hash: str, prefix: str, now: datetime
) -> None:
    await tx.run(
        _insert_key,
        {
            "key_id": key_id,
            "account_id": account_id,
            "name": name,
            "key_hash": key_hash,
            "prefix": prefix,
            "now": now,
        },
    )


@dataclass(frozen=True, slots=True)
class ActiveKey:
    key_id: str
    account_id: str


async def find_active_key(tx: Tx, key_hash: str) -> ActiveKey | None:
    """The unrevoked key with this hash: the hot path of every call."""
    row = await tx.one(_active_key, {"key_hash": key_hash})
    return None if row is None else ActiveKey(row["id"], row["account_id"])


async def get_key(tx: Tx, key_id: str) -> KeyRow | None:
    row = await tx.one(_key_by_id, {"key_id": key_id})
    return None if row is None else KeyRow(**row)


async def find_key_by_hash(tx: Tx, key_hash: str) -> KeyRow | None:
    row = await tx.one(_key_by_hash, {"key_hash": key_hash})
    return None if row is None else KeyRow(**row)


async def list_keys(tx: Tx) -> list[KeyRow]:
    return [KeyRow(**row) for row in await tx.all(_all_keys)]


async def revoke_key(tx: Tx, key_id: str, now: datetime) -> bool:
    return await tx.run(_revoke_key, {"key_id": key_id, "now": now}) == 1


# -- the operator's lists: accounts, and one account's ledger, newest first ------------


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    name: str
    balance: int
    created_at: datetime
    keys: int
    active_keys: int


_keys_of_account = select(func.count()).where(api_keys.c.account_id == accounts.c.id)
_accounts_page = Query(
    select(
        accounts.c.id,
        accounts.c.name,
        accounts.c.balance,
        accounts.c.created_at,
        _keys_of_account.scalar_subquery().label("keys"),
        _keys_of_account.where(api_keys.c.revoked_at.is_(None))
        .scalar_subquery()
        .label("active_keys"),
    )
    .where(older_than_cursor(accounts.c.created_at, accounts.c.id))
    .order_by(accounts.c.created_at.desc(), accounts.c.id.desc())
    .limit(bindparam("limit"))
)
# Ledger ids grow with every row, so they alone order an account's ledger.
_ledger_page = Query(
    select(*(ledger.c[name] for name in LedgerRow.__dataclass_fields__))
    .where(
        ledger.c.account_id == bindparam("account_id"),
        ledger.c.id < bindparam("before_id", type_=BigInteger),
    )
    .order_by(ledger.c.id.desc())
    .limit(bindparam("limit"))
)
_LEDGER_END = 2**63 - 1


async def accounts_page(tx: Tx, *, before: Cursor | None, limit: int) -> list[AccountRow]:
    rows = await tx.all(_accounts_page, cursor_params(before, limit))
    return [AccountRow(**row) for row in rows]


async def ledger_page(
    tx: Tx, account_id: str, *, before_id: int | None, limit: int
) -> list[LedgerRow]:
    """The account's ledger rows newest first, those older than `before_id` if given."""
    params = {
        "account_id": account_id,
        "before_id": _LEDGER_END if before_id is None else before_id,
        "limit": limit,
    }
    return [LedgerRow(**row) for row in await tx.all(_ledger_page, params)]

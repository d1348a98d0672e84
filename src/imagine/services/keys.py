"""API keys and accounts: create, authenticate, list, revoke, grant credits."""

from __future__ import annotations

from dataclasses import dataclass

from imagine.clock import iso_z, utc_now
from imagine.errors import AccountNotFound, InvalidInput, InvalidKey, NotFound, Unauthorized
from imagine.ids import (
    KEY_PREFIX,
    hash_api_key,
    key_prefix,
    new_account_id,
    new_api_key,
    new_key_id,
)
from imagine.schemas import AccountLedger, KeyInfo
from imagine.services import billing
from imagine.store import accounts as repo
from imagine.store.accounts import KeyRow, LedgerRow
from imagine.store.db import Database, Tx

DEV_KEY_NAME = "development"
DEV_KEY_CREDITS = 1000


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """The hash of the API key a request came with, not yet checked: a write that needs
    the caller can check the key itself (a create on PostgreSQL does, in its one
    statement) instead of paying a round trip for it first."""

    key_hash: str


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str
    """The secret itself: shown once, stored only as a hash."""
    key_id: str
    account_id: str
    name: str
    balance: int


@dataclass(frozen=True, slots=True)
class AccountCredits:
    account_id: str
    balance: int
    ledger: list[LedgerRow]


def presented_key_hash(authorization: str | None) -> str:
    """The hash of the key in an Authorization header; 401 when there is none."""
    if not authorization:
        raise Unauthorized("missing API key: send the header Authorization: Bearer <YOUR_API_KEY>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "malformed Authorization header: use Authorization: Bearer <YOUR_API_KEY>"
        )
    return hash_api_key(token)


def invalid_key() -> InvalidKey:
    return InvalidKey()


async def authenticate(db: Database, authorization: str | None) -> Caller:
    return await authenticate_hash(db, presented_key_hash(authorization))


async def authenticate_hash(db: Database, key_hash: str) -> Caller:
    """The caller holding the key of this hash; InvalidKey when it is unknown or revoked."""
    found = await db.read(lambda tx: repo.find_active_key(tx, key_hash), snapshot=False)
    if found is None:
        raise invalid_key()
    return Caller(key_id=found.key_id, account_id=found.account_id)


async def create_key(
    db: Database, *, name: str, credits: int, account_id: str | None = None
) -> CreatedKey:
    """A new key; on a new account with `credits`, or on an existing account."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name: give a name of 1 to 200 characters")
    if credits < 0:
        raise InvalidInput("credits: must be zero or more")
    raw = new_api_key()
    key_id = new_key_id()
    target = account_id or new_account_id()

    async def create(tx: Tx) -> int:
        now = utc_now()
        if account_id is None:
            await repo.insert_account(tx, account_id=target, name=name, now=now)
        elif not await repo.account_exists(tx, target):
            raise AccountNotFound(target)
        await repo.insert_key(
            tx,
            key_id=key_id,
            account_id=target,
            name=name,
            key_hash=hash_api_key(raw),
            prefix=key_prefix(raw),
            now=now,
        )
        if credits:
            await billing.grant(
                tx, account_id=target, amount=credits, note="initial credits", now=now
            )
        return await repo.get_balance(tx, target) or 0

    balance = await db.write(create)
    return CreatedKey(key=raw, key_id=key_id, account_id=target, name=name, balance=balance)


async def ensure_first_key(db: Database) -> CreatedKey | None:
    """On a new installation, a development key with some credits; None when one exists."""
    if await db.read(repo.count_accounts):
        return None
    return await create_key(db, name=DEV_KEY_NAME, credits=DEV_KEY_CREDITS)


async def list_keys(db: Database) -> list[KeyRow]:
    return await db.read(repo.list_keys)


async def find_key(db: Database, ref: str) -> KeyRow:
    """A key by its id (`key_...`) or by the secret itself."""
    if ref.startswith(KEY_PREFIX):
        key_hash = hash_api_key(ref)
        found = await db.read(lambda tx: repo.find_key_by_hash(tx, key_hash))
        shown = key_prefix(ref) + "…"
    else:
        found = await db.read(lambda tx: repo.get_key(tx, ref))
        shown = ref
    if found is None:
        raise NotFound(f"key {shown} not found; `imagine keys list` shows the key ids")
    return found


async def revoke_key(db: Database, ref: str) -> KeyRow:
    key = await find_key(db, ref)
    await db.write(lambda tx: repo.revoke_key(tx, key.id, utc_now()))
    return await find_key(db, key.id)


async def resolve_account(db: Database, ref: str) -> str:
    """An account id from an account id, a key id or a key."""
    if ref.startswith("acc_"):
        if await db.read(lambda tx: repo.account_exists(tx, ref)):
            return ref
        raise AccountNotFound(ref, "; `imagine keys list` shows the accounts")
    return (await find_key(db, ref)).account_id


async def grant_credits(db: Database, ref: str, amount: int, note: str | None) -> tuple[str, int]:
    account_id = await resolve_account(db, ref)
    balance = await db.write(
        lambda tx: billing.grant(tx, account_id=account_id, amount=amount, note=note, now=utc_now())
    )
    return account_id, balance


async def account_credits(db: Database, ref: str, *, ledger_rows: int = 20) -> AccountCredits:
    account_id = await resolve_account(db, ref)

    async def read(tx: Tx) -> AccountCredits:
        balance = await repo.get_balance(tx, account_id) or 0
        rows = await repo.recent_ledger(tx, account_id, ledger_rows)
        return AccountCredits(account_id=account_id, balance=balance, ledger=rows)

    return await db.read(read)


async def balance_of(db: Database, account_id: str) -> int:
    return await db.read(lambda tx: repo.get_balance(tx, account_id)) or 0


def key_view(key: KeyRow) -> KeyInfo:
    """A key as the CLI and the admin API show it: never the secret."""
    return {
        "key_id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "account_id": key.account_id,
        "balance": key.balance,
        "created_at": iso_z(key.created_at),
        "revoked_at": iso_z(key.revoked_at) if key.revoked_at else None,
    }


def credits_view(found: AccountCredits) -> AccountLedger:
    return {
        "account_id": found.account_id,
        "balance": found.balance,
        "ledger": [
            {
                "kind": row.kind,
                "amount": row.amount,
                "balance_after": row.balance_after,
                "task_id": row.task_id,
                "note": row.note,
                "created_at": iso_z(row.created_at),
            }
            for row in found.ledger
        ],
    }

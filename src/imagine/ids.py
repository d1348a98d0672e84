"""Identifiers and API key material."""

from __future__ import annotations

import hashlib
import secrets
import time

KEY_PREFIX = "im_"


def new_task_id() -> str:
    """`t` + 11 hex digits of milliseconds + 80 random bits (32 characters).

    The random part keeps ids unguessable (they appear in result URLs); the time prefix
    makes new rows land at the end of the primary-key index instead of at a random page,
    which keeps inserts (and what each commit writes) small as the table grows.
    """
    return f"t{time.time_ns() // 1_000_000:011x}{secrets.token_hex(10)}"


def new_account_id() -> str:
    return "acc_" + secrets.token_hex(8)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_api_key(raw_key: str) -> str:
    """Keys carry 240 random bits, so a plain SHA-256 is as safe as a slow hash and far cheaper."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def key_prefix(raw_key: str) -> str:
    return raw_key[:10]

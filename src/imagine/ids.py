"""Identifiers and API key material."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "im_"


def new_task_id() -> str:
    # 80 random bits: task ids appear in result URLs, so they must not be guessable.
    return "t" + secrets.token_hex(10)


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

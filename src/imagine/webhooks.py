"""Standard Webhooks (standardwebhooks.com): how deliveries are signed, and `verify` for
receivers.

    from imagine.webhooks import verify, WebhookVerificationError

    try:
        envelope = verify(request_body, request_headers, secret)  # "whsec_..."
    except WebhookVerificationError:
        return 400

A delivery carries `webhook-id` (the same on every retry: use it to drop duplicates),
`webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, keyed with the secret's base64-decoded bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
"""How far a delivery's timestamp may be from the receiver's clock (replay protection)."""


class WebhookVerificationError(Exception):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """The delivery's JSON once its signature and timestamp check out; raises
    WebhookVerificationError otherwise. `headers` may use any letter case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and stamp.isdigit() and signatures):
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        raise WebhookVerificationError("the timestamp is too old or too new")
    expected = signature(secret, message_id, int(stamp), body)
    for presented in signatures.split():
        if presented.startswith("v1,") and hmac.compare_digest(presented, expected):
            return orjson.loads(body)
    raise WebhookVerificationError("no signature matches")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_schedule(value: Any) -> tuple[float, ...]:
    """`5s,5m,30m,2h,5h,10h,10h`: the waits before each retry, in seconds."""
    if isinstance(value, tuple | list):
        return tuple(float(item) for item in value)
    waits = []
    for part in str(value).split(","):
        match = _DURATION.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a duration like 5s, 5m or 2h")
        waits.append(float(match.group(1)) * _UNIT[match.group(2)])
    if not waits:
        raise ValueError("give at least one wait")
    return tuple(waits)

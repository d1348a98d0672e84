"""Per-key rate limits for generate and status, with the `limits` library: a moving
window in memory by default, or in Redis (`IMAGINE_REDIS_URL`) so that every process of
a fleet shares one budget per key."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from imagine.config import parse_limit
from imagine.errors import TooManyRequests

__all__ = ["GENERATE", "STATUS", "Decision", "RateLimiter", "parse_limit"]

logger = logging.getLogger("imagine.ratelimit")

GENERATE = "generate"
STATUS = "status"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    """Seconds until the window has room again."""

    def headers(self) -> dict[str, str]:
        found = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            found["Retry-After"] = str(max(1, self.reset_after))
        return found


class RateLimiter:
    def __init__(self, rules: dict[str, RateLimitItem | None], redis_url: str | None) -> None:
        self._rules = {kind: item for kind, item in rules.items() if item is not None}
        storage: Storage = (
            RedisStorage("async+" + redis_url, implementation="redispy", wrap_exceptions=True)
            if redis_url
            else MemoryStorage()
        )
        self._limiter = MovingWindowRateLimiter(storage)

    def limits(self, kind: str) -> bool:
        return kind in self._rules

    async def check(self, kind: str, identity: str) -> Decision | None:
        """Count one request of `kind` by `identity`; raises TooManyRequests past the
        limit. None when `kind` has no limit (or the shared store can't be reached: a
        broken Redis must not take the API down with it)."""
        item = self._rules.get(kind)
        if item is None:
            return None
        try:
            allowed = await self._limiter.hit(item, kind, identity)
            stats = await self._limiter.get_window_stats(item, kind, identity)
        except StorageError as exc:
            logger.warning("rate limit store unavailable, not limiting: %s", exc)
            return None
        decision = Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0, math.ceil(stats.reset_time - time.time())),
        )
        if not allowed:
            raise TooManyRequests(
                f"rate limit of {item.amount} {kind} requests per "
                f"{period_in_words(item.get_expiry())} reached for this key; "
                f"retry in {decision.headers()['Retry-After']} s",
                headers=decision.headers(),
            )
        return decision


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def period_in_words(seconds: int) -> str:
    """A limit's period as people say it: "second", "minute", "10 seconds", "2 hours"."""
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"

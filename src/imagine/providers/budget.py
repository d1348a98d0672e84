"""Upstream call budgets: how many calls of an operation a provider account allows per
window. A call waits for its turn rather than spend one on a 429 (a refused call is not
queued upstream), and waiting is the only answer: a budget never refuses a call.

`Budget` is per process, a leaky bucket per operation (aiolimiter). A fleet shares one in
Redis instead (`providers.shared_budget`, with the `redis` extra).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from aiolimiter import AsyncLimiter


class CallBudget(Protocol):
    async def acquire(self, operation: str) -> None:
        """Return once a call of `operation` may go (operations without a rate: at once)."""
        ...

    async def aclose(self) -> None: ...


class Budget:
    """Upstream call limiters by operation, per process; operations without one are not
    limited. A leaky bucket lets a full bucket through and then the rate, so any one window
    may see up to twice the rate."""

    def __init__(self, rates: Mapping[str, tuple[int, float]]) -> None:
        self._limiters = {
            operation: AsyncLimiter(calls, seconds) for operation, (calls, seconds) in rates.items()
        }

    async def acquire(self, operation: str) -> None:
        limiter = self._limiters.get(operation)
        if limiter is not None:
            await limiter.acquire()

    async def aclose(self) -> None:
        return None


def account_id(api_key: str) -> str:
    """Names an upstream account in shared keys without putting its key in Redis."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]

"""An upstream call budget kept in Redis, shared by every process of a fleet that uses the
same provider account; it falls back to a per-process `Budget` while Redis can't be
reached. Imported only when `IMAGINE_REDIS_URL` is set: `redis` is an extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.retry import Retry

from imagine.providers.budget import Budget

logger = logging.getLogger("imagine.providers.budget")

REDIS_TIMEOUT = 2.0
"""Seconds a Redis call may take before the budget falls back to this process's own."""
RETRY_SHARED_AFTER = 5.0
"""Seconds between tries to reach Redis again while it is down."""

# A sliding log, decided on Redis's clock. A call may go at `now` when fewer than `limit`
# calls went in (now - window, now]; then every window of that length holds at most
# `limit` calls, whatever the processes and however they interleave. (A fixed window lets
# twice the limit through across a boundary; a leaky bucket lets a full bucket through on
# top of its rate; limits' moving window is the same log, but stamped with each client's
# clock, and hosts' clocks differ.) The list holds the last `limit` grants, newest first:
# the one at index limit-1 says when the next call may go. Refused, the script answers the
# microseconds until then, so a waiter sleeps exactly that long: no polling, no lateness
# beyond a round trip. Times are whole microseconds, kept as strings so that Lua's number
# formatting never rounds them.
_ACQUIRE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local oldest = redis.call('LINDEX', KEYS[1], limit - 1)
if oldest then
    local free_at = tonumber(oldest) + window
    if free_at > now then
        return free_at - now
    end
end
redis.call('LPUSH', KEYS[1], clock[1] .. string.format('%06d', tonumber(clock[2])))
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
return 0
"""


class SharedBudget:
    """The budget of one provider account, kept in Redis under
    `imagine:budget:<provider>:<account>:<operation>` for every process that uses it.

    Processes that share an account should be configured with the same rates: each trims
    the log to its own limit."""

    def __init__(
        self,
        redis_url: str,
        provider: str,
        account: str,
        rates: Mapping[str, tuple[int, float]],
    ) -> None:
        self._url = redis_url
        self._provider = provider
        self._prefix = f"imagine:budget:{provider}:{account}:"
        self._rates = {
            operation: (calls, max(1, round(seconds * 1_000_000)))
            for operation, (calls, seconds) in rates.items()
        }
        self._fallback = Budget(rates)
        self._redis: Redis | None = None
        self._script: AsyncScript | None = None
        self._turns: dict[str, asyncio.Lock] = {}
        self._down_until: float | None = None
        """While Redis is down: when (time.monotonic()) to try it again."""

    def _acquire_script(self) -> AsyncScript:
        # Made on first use: a connection belongs to the event loop that runs it.
        if self._script is None:
            self._redis = Redis.from_url(
                self._url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                # A failure is answered by falling back, at once, not by retrying here.
                retry=Retry(NoBackoff(), 0),
            )
            # Sent by its digest (EVALSHA), loaded again if Redis has forgotten it.
            self._script = self._redis.register_script(_ACQUIRE)
        return self._script

    def _turn(self, operation: str) -> asyncio.Lock:
        # One waiter per process and operation asks Redis at a time, the others queue
        # here in order: a slot freed fleet-wide is then one round trip per process, not
        # one per waiting call.
        turn = self._turns.get(operation)
        if turn is None:
            turn = self._turns[operation] = asyncio.Lock()
        return turn

    async def acquire(self, operation: str) -> None:
        rate = self._rates.get(operation)
        if rate is None:
            return
        async with self._turn(operation):
            while True:
                if self._down_until is not None and time.monotonic() < self._down_until:
                    await self._fallback.acquire(operation)
                    return
                try:
                    wait = await self._ask(operation, rate)
                except (RedisError, OSError) as exc:
                    self._fell_back(exc)
                    await self._fallback.acquire(operation)
                    return
                self._recovered()
                if wait <= 0:
                    return
                await asyncio.sleep(wait / 1_000_000)

    async def _ask(self, operation: str, rate: tuple[int, int]) -> int:
        """0 when the call may go now, else the microseconds until it may."""
        calls, window = rate
        answer = await self._acquire_script()(keys=[self._prefix + operation], args=[calls, window])
        return int(answer)

    def _fell_back(self, exc: Exception) -> None:
        if self._down_until is None:
            logger.warning(
                "%s call budget: Redis at IMAGINE_REDIS_URL is unreachable (%s: %s); each "
                "process now keeps its own budget, so the fleet may exceed the provider's "
                "limits until Redis is back; check that Redis is running",
                self._provider,
                type(exc).__name__,
                exc,
            )
        self._down_until = time.monotonic() + RETRY_SHARED_AFTER

    def _recovered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            logger.warning(
                "%s call budget: Redis is back; the fleet shares it again", self._provider
            )

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._script = None

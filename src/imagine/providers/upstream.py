"""HTTP to upstream providers: a client per provider, its call budget, and the error
policy every provider shares (docs/providers.md has it as a table).

The budget (providers/budget.py) waits for a slot per operation: kie.ai allows 10 polls
per second and 20 creates per 10 seconds per account, and a refused call is not queued
upstream, so we wait here rather than spend one on a 429. With IMAGINE_REDIS_URL every
process of a fleet shares the account's budget.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

from imagine.config import SettingsError
from imagine.metrics import UPSTREAM_CALL_SECONDS, UPSTREAM_CALLS
from imagine.providers.base import Health, ProviderError
from imagine.providers.budget import Budget, CallBudget, account_id

CALLS_AT_ONCE = 16
"""Upstream calls in flight per provider and process."""
CREATE = "create"
POLL = "poll"
ACCOUNT = "account"


class Unreachable(ProviderError):
    """No answer at all: a timeout, a refused or reset connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream HTTP answer, read whole (upstream API answers are small)."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]


class UpstreamSettings(Protocol):
    """The settings every upstream provider module declares (under its own prefix)."""

    base_url: str
    timeout: float
    poll_rate: tuple[int, float]
    create_rate: tuple[int, float]


def upstream_client(
    provider: str,
    settings: UpstreamSettings,
    api_key: str,
    user_agent: str,
    *,
    redis_url: str | None = None,
) -> UpstreamClient:
    """With `redis_url`, the budget is shared by every process that calls this provider
    with the same API key."""
    rates = {CREATE: settings.create_rate, POLL: settings.poll_rate}
    budget: CallBudget
    if redis_url:
        # Here, not at the top: redis is the `redis` extra, needed only by fleets.
        from imagine.providers.shared_budget import SharedBudget

        budget = SharedBudget(redis_url, provider, account_id(api_key), rates)
    else:
        budget = Budget(rates)
    return UpstreamClient(
        provider,
        settings.base_url,
        api_key,
        user_agent=user_agent,
        timeout=settings.timeout,
        budget=budget,
    )


class UpstreamClient:
    """HTTP to one provider's API. aiohttp, not httpx: measured on this server's hot path,
    an httpx request cost 1.9 ms of CPU against 0.3 ms for aiohttp, and a worker with
    thousands of tasks in flight makes hundreds of upstream calls a second."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        api_key: str,
        *,
        user_agent: str,
        timeout: float,
        budget: CallBudget,
    ) -> None:
        self.provider = provider
        self.budget = budget
        self._base_url = base_url.rstrip("/")
        host = urlsplit(base_url).hostname
        # The operator chose this host: its results may be fetched even on a private address.
        self.trusted_hosts = frozenset({host} if host else ())
        self._headers = {"authorization": f"Bearer {api_key}", "user-agent": user_agent}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None
        # Calls beyond the pool wait here, and the wait for a slot is not part of the
        # call's timeout.
        self._slots = asyncio.Semaphore(CALLS_AT_ONCE)

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=CALLS_AT_ONCE),
            )
        return self._session

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """One upstream request after its budget allows it. Timeouts and broken connections
        raise Unreachable (retryable); HTTP answers are returned for the provider to read."""
        await self.budget.acquire(operation)
        body = None if json is None else orjson.dumps(json)
        headers = None if body is None else {"content-type": "application/json"}
        started = 0.0
        try:
            async with self._slots:
                started = time.perf_counter()
                async with self._open().request(
                    method,
                    self._base_url + path,
                    data=body,
                    params=params,
                    headers=headers,
                    allow_redirects=False,
                ) as response:
                    answer = Answer(response.status, await response.read(), response.headers)
        except TimeoutError:
            UPSTREAM_CALLS.labels(self.provider, operation, "timeout").inc()
            raise Unreachable(f"{self.provider} did not answer in time") from None
        except aiohttp.ClientError as exc:
            UPSTREAM_CALLS.labels(self.provider, operation, "unreachable").inc()
            raise Unreachable(f"could not reach {self.provider} ({type(exc).__name__})") from None
        finally:
            # Timed on every ending (a timeout too); the slot wait is not part of it.
            if started:
                UPSTREAM_CALL_SECONDS.labels(self.provider, operation).observe(
                    time.perf_counter() - started
                )
        UPSTREAM_CALLS.labels(self.provider, operation, str(answer.status_code)).inc()
        return answer

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.budget.aclose()


def json_object(response: Answer) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is anything else."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def retry_after(response: Answer) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped at 10 minutes."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), 600.0)


def classify(
    provider: str, code: int, detail: str, *, retry_after: float | None = None
) -> ProviderError:
    """The error policy: what an upstream error code means for the task.

    Retryable errors are tried again with backoff and then on the next route; only the
    task's deadline turns them into a failure. The rest fail the task and refund it, with
    a message that tells the user what to do.
    """
    said = f": {detail}" if detail else ""
    if code in (401, 403):
        return ProviderError(
            f"the generation provider refused this server's credentials (upstream {code}); "
            "the operator has been alerted, try again later",
            retryable=False,
            operator=True,
        )
    if code == 402:
        return ProviderError(
            "the generation provider's account is out of credits (upstream 402); "
            "the operator has been alerted, try again later",
            retryable=False,
            operator=True,
        )
    if code == 422:
        return ProviderError(
            f"the provider rejected the input{said}; change the input and submit a new task",
            retryable=False,
        )
    if code == 505:
        return ProviderError(
            f"this feature is disabled at the provider{said}; use another model or options",
            retryable=False,
        )
    if code == 429:
        return ProviderError(
            f"{provider} is rate limiting us{said}", retryable=True, retry_after=retry_after
        )
    if code == 455:
        return ProviderError(
            f"{provider} is under maintenance{said}",
            retryable=True,
            retry_after=retry_after,
            failover=True,
        )
    if code >= 500:
        return ProviderError(
            f"{provider} had a server error ({code}){said}", retryable=True, retry_after=retry_after
        )
    return ProviderError(f"the provider refused the task ({code}){said}", retryable=False)


def required_key(secret: SecretStr | None, provider: str) -> str:
    """A provider's API key, or the one-line SettingsError that stops the start."""
    if secret is None or not secret.get_secret_value().strip():
        raise SettingsError(
            f"invalid setting IMAGINE_{provider.upper()}_API_KEY: required, since a route "
            f"uses {provider} (IMAGINE_PROVIDER or IMAGINE_ROUTES)"
        )
    return secret.get_secret_value()


async def probe(ask: Callable[[], Awaitable[float | None]]) -> Health:
    """A provider's health from one authenticated call; `ask` returns the balance, if any."""
    started = time.perf_counter()
    try:
        balance = await ask()
    except ProviderError as exc:
        return Health(ok=False, reachable=not isinstance(exc, Unreachable), detail=exc.message)
    latency = round((time.perf_counter() - started) * 1000, 1)
    return Health(
        ok=True, reachable=True, detail="credentials accepted", balance=balance, latency_ms=latency
    )

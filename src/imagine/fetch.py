"""Downloads the server makes: source images (for image-to-video and upscale) and the
results it mirrors from upstream providers.

Every hop is checked: an http(s) URL whose host is read the way the system resolver reads
it (netguard) and resolves only to public addresses (unless the operator allows private
ones, or the host is one the operator configured for a provider), manual redirects
re-checked each time, a size limit enforced while streaming, a minimum rate below which
a trickle is cut off, and the bytes' real type sniffed rather than trusted from headers.

Capacity is shared fairly: users' source images and provider result copies have slots of
their own, so neither can starve the other, and one account holds at most a few source
downloads at once; its further ones wait their turn in the queue, not in a slot.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from imagine.config import Settings
from imagine.netguard import (
    CheckedResolver,
    InvalidHost,
    RefusedAddress,
    canonical_host,
    known_refusal,
    target,
    url_problem,
)
from imagine.providers.base import Artifact, ProviderError
from imagine.providers.media import sniff_content_type
from imagine.storage import Storage, StorageError

_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
DOWNLOAD_SECONDS = 600.0
RATE_GRACE_SECONDS = 10.0
"""A download may be slower than the minimum rate for this long (a slow first byte)."""
SOURCE_ATTEMPTS = 6
"""Tries of a source image that answers 5xx, 429 or not at all: about a minute of
backoff in all, then the task fails with what the source answered."""
BUSY_RETRY_SECONDS = 1.0
"""Least wait of a source download put off because its account's share is in use."""


@dataclass(frozen=True, slots=True)
class FetchLimits:
    source_downloads: int = 16
    """Source images downloading at once, all accounts together."""
    source_downloads_per_account: int = 4
    """Source images one account may have downloading at once."""
    result_downloads: int = 16
    """Provider results being copied at once."""
    min_rate: int = 32 * 1024
    """Bytes per second a download must keep up after the grace period; 0: no minimum."""

    @classmethod
    def of(cls, settings: Settings) -> FetchLimits:
        return cls(
            source_downloads=settings.source_downloads,
            source_downloads_per_account=settings.source_downloads_per_account,
            result_downloads=settings.result_downloads,
            min_rate=settings.download_min_rate,
        )


class Fetcher:
    def __init__(
        self,
        storage: Storage,
        *,
        user_agent: str,
        allow_private: bool,
        max_source_bytes: int,
        max_result_bytes: int,
        limits: FetchLimits | None = None,
    ) -> None:
        self._storage = storage
        self._allow_private = allow_private
        self._max_source_bytes = max_source_bytes
        self._max_result_bytes = max_result_bytes
        self._limits = limits or FetchLimits()
        # Two pools: user URLs (sources) never get the trust given to the operator's
        # provider hosts, which only results are fetched from.
        self._sources = _Pool(
            user_agent, CheckedResolver(allow_private=allow_private), self._limits.source_downloads
        )
        self._results = _Pool(
            user_agent, CheckedResolver(allow_private=allow_private), self._limits.result_downloads
        )
        self._source_slots = asyncio.Semaphore(self._limits.source_downloads)
        self._result_slots = asyncio.Semaphore(self._limits.result_downloads)
        self._per_account: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, storage: Storage, settings: Settings, user_agent: str) -> Fetcher:
        return cls(
            storage,
            user_agent=user_agent,
            allow_private=settings.allow_private_urls,
            max_source_bytes=settings.max_download_bytes,
            max_result_bytes=settings.max_result_bytes,
            limits=FetchLimits.of(settings),
        )

    def trust(self, hosts: Collection[str]) -> None:
        """Provider hosts the operator configured: results may come from their private
        addresses."""
        canonical = set()
        for host in hosts:
            try:
                canonical.add(canonical_host(host)[0])
            except InvalidHost:
                continue  # no URL can name it, so there is nothing to trust
        self._results.resolver.trusted_hosts = frozenset(canonical)

    async def aclose(self) -> None:
        await self._sources.close()
        await self._results.close()

    def is_own_url(self, url: str) -> bool:
        """One of our result URLs: read from storage, never fetched."""
        return self._storage.is_own(url)

    async def source_image(self, url: str, account_id: str) -> bytes:
        """A source image's bytes: from our storage when it is one of our URLs."""
        if self._storage.is_own(url):
            try:
                data = await self._storage.read(url)
            except StorageError as exc:
                raise ProviderError(exc.args[0], retryable=True) from None
            if data is None:
                raise ProviderError(f"the source {url} no longer exists", retryable=False)
            return data
        share = self._limits.source_downloads_per_account
        if self._per_account[account_id] >= share:
            raise ProviderError(
                f"this account already has {share} source images downloading",
                retryable=True,
                # Jittered, so one account's waiting tasks don't all come back at once.
                retry_after=BUSY_RETRY_SECONDS * random.uniform(1, 3),
                deferred=True,
            )
        self._per_account[account_id] += 1
        try:
            async with self._source_slots:
                data = await self._download(
                    self._sources, url, self._max_source_bytes, "the source URL", SOURCE_ATTEMPTS
                )
        finally:
            self._per_account[account_id] -= 1
            if self._per_account[account_id] <= 0:
                del self._per_account[account_id]
        if not (sniff_content_type(data) or "").startswith("image/"):
            raise ProviderError("the source URL is not a PNG, JPEG or WebP image", retryable=False)
        return data

    async def result(self, url: str) -> Artifact:
        """One upstream result, to be stored as ours; an image or an MP4 video."""
        async with self._result_slots:
            data = await self._download(self._results, url, self._max_result_bytes, "the result")
        kind = sniff_content_type(data)
        if kind is None:
            raise ProviderError(
                "the provider's result is not an image or an MP4 video", retryable=False
            )
        return Artifact(data, kind)

    async def _download(
        self, pool: _Pool, url: str, max_bytes: int, what: str, attempts: int | None = None
    ) -> bytes:
        try:
            return await self._download_now(pool, url, max_bytes, what)
        except ProviderError as exc:
            if exc.retryable and attempts is not None:
                exc.max_attempts = attempts
            raise
        except RefusedAddress as exc:
            raise ProviderError(f"{what} was refused: {exc}", retryable=False) from None
        except (aiohttp.InvalidURL, InvalidHost):
            raise ProviderError(f"{what} is not a valid URL", retryable=False) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(
                f"{what} could not be downloaded ({_describe(exc)})",
                retryable=True,
                max_attempts=attempts,
            ) from None
        except Exception as exc:  # e.g. a host name the resolver can't encode
            raise ProviderError(
                f"{what} could not be downloaded ({_describe(exc)})", retryable=False
            ) from None

    def _refusal(self, pool: _Pool, url: str) -> str | None:
        """Why this hop may not be fetched, judged before any connection."""
        if target(url).host in pool.resolver.trusted_hosts:
            return None
        refusal = known_refusal(url, allow_private=self._allow_private)
        return None if refusal is None else f"{refusal}, which this server does not fetch"

    async def _download_now(self, pool: _Pool, url: str, max_bytes: int, what: str) -> bytes:
        for _ in range(_MAX_REDIRECTS + 1):
            problem = url_problem(url)
            if problem is not None:
                raise ProviderError(f"{what} {problem}", retryable=False)
            refusal = self._refusal(pool, url)
            if refusal is not None:
                raise ProviderError(f"{what} was refused: it {refusal}", retryable=False)
            # Headers must come within the grace period too: a server that drips them
            # would otherwise hold a slot for as long as the whole download may take.
            async with asyncio.timeout(RATE_GRACE_SECONDS if self._limits.min_rate else None):
                response = await pool.session().get(target(url).url, allow_redirects=False)
            async with response:
                if response.status in _REDIRECTS and "location" in response.headers:
                    # Each hop is checked again: a public URL may redirect inward.
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status == 429 or response.status >= 500:
                    raise ProviderError(
                        f"{what} answered HTTP {response.status}",
                        retryable=True,
                        retry_after=_retry_after(response),
                    )
                if response.status != 200:
                    raise ProviderError(f"{what} answered HTTP {response.status}", retryable=False)
                return await _read_limited(response, max_bytes, what, self._limits.min_rate)
        raise ProviderError(f"{what} redirected too many times", retryable=False)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the connection broke off"
    return type(exc).__name__


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    given = response.headers.get("retry-after", "").strip()
    return (
        min(float(given), 60.0) if given.isascii() and given.isdigit() and len(given) < 6 else None
    )


async def _read_limited(
    response: aiohttp.ClientResponse, max_bytes: int, what: str, min_rate: int
) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ProviderError(f"{what} is larger than {max_bytes} bytes", retryable=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    size = 0
    while True:
        # The next bytes must come before the average falls below the minimum rate.
        cut_at = started + max(RATE_GRACE_SECONDS, size / min_rate) if min_rate > 0 else None
        try:
            async with asyncio.timeout_at(cut_at):
                chunk = await response.content.readany()
        except TimeoutError:
            raise ProviderError(
                f"{what} arrived slower than {min_rate} bytes per second and was cut off",
                retryable=True,
            ) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ProviderError(f"{what} is larger than {max_bytes} bytes", retryable=False)
        chunks.append(chunk)


class _Pool:
    """A session whose connections go only to addresses its resolver checked."""

    def __init__(self, user_agent: str, resolver: CheckedResolver, size: int) -> None:
        self.resolver = resolver
        self._user_agent = user_agent
        self._size = size
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"user-agent": self._user_agent},
                # Stalls are cut by the minimum rate; these bound the rest.
                timeout=aiohttp.ClientTimeout(
                    total=DOWNLOAD_SECONDS, sock_connect=5.0, sock_read=15.0
                ),
                connector=aiohttp.TCPConnector(
                    limit=self._size, resolver=self.resolver, ttl_dns_cache=10
                ),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

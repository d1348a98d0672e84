"""Downloads the server makes: source images (for image-to-video and upscale) and the
results it mirrors from upstream providers.

Every hop is checked: an http(s) URL whose host resolves only to public addresses
(unless the operator allows private ones, or the host is one the operator configured
for a provider), manual redirects re-checked each time, a size limit enforced while
streaming, and the bytes' real type sniffed rather than trusted from headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from urllib.parse import urljoin, urlsplit

import aiohttp

from imagine.netguard import (
    CheckedResolver,
    RefusedAddress,
    is_public_address,
    literal_address,
    url_problem,
)
from imagine.providers.base import Artifact, ProviderError
from imagine.providers.media import sniff_content_type
from imagine.storage import LocalStorage

_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
DOWNLOAD_SECONDS = 600.0
DOWNLOADS_AT_ONCE = 16
"""Downloads in flight per process (the connection pool's size)."""


class Fetcher:
    def __init__(
        self,
        storage: LocalStorage,
        *,
        user_agent: str,
        allow_private: bool,
        max_source_bytes: int,
        max_result_bytes: int,
    ) -> None:
        self._storage = storage
        self._user_agent = user_agent
        self._allow_private = allow_private
        self._max_source_bytes = max_source_bytes
        self._max_result_bytes = max_result_bytes
        # Two pools: user URLs (sources) never get the trust given to the operator's
        # provider hosts, which only results are fetched from.
        self._sources = _Pool(user_agent, CheckedResolver(allow_private=allow_private))
        self._results = _Pool(user_agent, CheckedResolver(allow_private=allow_private))
        self._slots = asyncio.Semaphore(DOWNLOADS_AT_ONCE)

    def trust(self, hosts: Collection[str]) -> None:
        """Provider hosts the operator configured: results may come from their private
        addresses."""
        self._results.resolver.trusted_hosts = frozenset(hosts)

    async def aclose(self) -> None:
        await self._sources.close()
        await self._results.close()

    def is_own_url(self, url: str) -> bool:
        """One of our result URLs: read from storage, never fetched."""
        return self._storage.local_path(url) is not None

    async def source_image(self, url: str) -> bytes:
        """A source image's bytes: from our storage when it is one of our URLs."""
        if self._storage.local_path(url) is not None:
            data = await self._storage.read(url)
            if data is None:
                raise ProviderError(f"the source {url} no longer exists", retryable=False)
            return data
        data = await self._download(self._sources, url, self._max_source_bytes, "the source URL")
        if not (sniff_content_type(data) or "").startswith("image/"):
            raise ProviderError("the source URL is not a PNG, JPEG or WebP image", retryable=False)
        return data

    async def result(self, url: str) -> Artifact:
        """One upstream result, to be stored as ours; an image or an MP4 video."""
        data = await self._download(self._results, url, self._max_result_bytes, "the result")
        kind = sniff_content_type(data)
        if kind is None:
            raise ProviderError(
                "the provider's result is not an image or an MP4 video", retryable=False
            )
        return Artifact(data, kind)

    async def _download(self, pool: _Pool, url: str, max_bytes: int, what: str) -> bytes:
        async with self._slots:
            try:
                return await self._download_now(pool, url, max_bytes, what)
            except ProviderError:
                raise
            except Exception as exc:  # e.g. a host name the resolver can't encode
                raise ProviderError(
                    f"{what} could not be downloaded ({type(exc).__name__})", retryable=False
                ) from None

    async def _download_now(self, pool: _Pool, url: str, max_bytes: int, what: str) -> bytes:
        for _ in range(_MAX_REDIRECTS + 1):
            problem = url_problem(url)
            if problem is not None:
                raise ProviderError(f"{what} URL {problem}", retryable=False)
            literal = literal_address(url)
            if (
                literal is not None
                and not self._allow_private
                and urlsplit(url).hostname not in pool.resolver.trusted_hosts
                and not is_public_address(literal)
            ):
                raise ProviderError(
                    f"{what} URL was refused: {literal} is a private or reserved address, "
                    "which this server does not fetch",
                    retryable=False,
                )
            try:
                async with pool.session().get(url, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and "location" in response.headers:
                        # Each hop is checked again: a public URL may redirect inward.
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status == 429 or response.status >= 500:
                        raise ProviderError(
                            f"{what} URL answered HTTP {response.status}", retryable=True
                        )
                    if response.status != 200:
                        raise ProviderError(
                            f"{what} URL answered HTTP {response.status}", retryable=False
                        )
                    return await _read_limited(response, max_bytes, what)
            except RefusedAddress as exc:
                raise ProviderError(f"{what} URL was refused: {exc}", retryable=False) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ProviderError(
                    f"{what} could not be downloaded ({type(exc).__name__})", retryable=True
                ) from None
        raise ProviderError(f"{what} URL redirected too many times", retryable=False)


async def _read_limited(response: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ProviderError(f"{what} is larger than {max_bytes} bytes", retryable=False)
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ProviderError(f"{what} is larger than {max_bytes} bytes", retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


class _Pool:
    """A session whose connections go only to addresses its resolver checked."""

    def __init__(self, user_agent: str, resolver: CheckedResolver) -> None:
        self.resolver = resolver
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"user-agent": self._user_agent},
                # A slow drip can't hold a download open either: 15 s per read, 10 min whole.
                timeout=aiohttp.ClientTimeout(
                    total=DOWNLOAD_SECONDS, sock_connect=5.0, sock_read=15.0
                ),
                connector=aiohttp.TCPConnector(
                    limit=DOWNLOADS_AT_ONCE, resolver=self.resolver, ttl_dns_cache=10
                ),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

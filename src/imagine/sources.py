"""Loads source images for image-to-video and upscale: from our storage, or over HTTP."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from imagine.netguard import resolve_checked, url_problem
from imagine.providers.base import ProviderError
from imagine.providers.media import sniff_content_type
from imagine.storage import LocalStorage

_MAX_REDIRECTS = 3


class SourceFetcher:
    def __init__(
        self,
        storage: LocalStorage,
        http: httpx.AsyncClient,
        *,
        allow_private: bool,
        max_bytes: int,
    ) -> None:
        self._storage = storage
        self._http = http
        self._allow_private = allow_private
        self._max_bytes = max_bytes

    async def __call__(self, url: str) -> bytes:
        if self._storage.local_path(url) is not None:
            data = await self._storage.read(url)
            if data is None:
                raise ProviderError(f"the source {url} no longer exists", retryable=False)
            return data
        return await self._download(url)

    async def _download(self, url: str) -> bytes:
        for _ in range(_MAX_REDIRECTS + 1):
            problem = url_problem(url)
            if problem is not None:
                raise ProviderError(f"the source URL {problem}", retryable=False)
            try:
                await resolve_checked(url, allow_private=self._allow_private)
            except ValueError as exc:
                raise ProviderError(f"the source URL was refused: {exc}", retryable=False) from None
            try:
                async with self._http.stream("GET", url, follow_redirects=False) as response:
                    if response.is_redirect and "location" in response.headers:
                        # Each hop is checked again: a public URL may redirect inward.
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code == 429 or response.status_code >= 500:
                        raise ProviderError(
                            f"the source URL answered HTTP {response.status_code}", retryable=True
                        )
                    if response.status_code != 200:
                        raise ProviderError(
                            f"the source URL answered HTTP {response.status_code}",
                            retryable=False,
                        )
                    data = await self._read_limited(response)
            except httpx.HTTPError as exc:
                raise ProviderError(
                    f"the source URL could not be downloaded ({type(exc).__name__})",
                    retryable=True,
                ) from None
            if not (sniff_content_type(data) or "").startswith("image/"):
                raise ProviderError(
                    "the source URL is not a PNG, JPEG or WebP image", retryable=False
                )
            return data
        raise ProviderError("the source URL redirected too many times", retryable=False)

    async def _read_limited(self, response: httpx.Response) -> bytes:
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise ProviderError(
                    f"the source image is larger than {self._max_bytes} bytes", retryable=False
                )
            chunks.append(chunk)
        return b"".join(chunks)

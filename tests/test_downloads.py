"""Download capacity and its limits, with the real fetcher against real loopback servers:
sources and result copies have separate slots, one account can't take every source slot,
a trickle is cut off, and a source that keeps failing fails its task after a few tries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from imagine.fetch import SOURCE_ATTEMPTS, Fetcher, FetchLimits
from imagine.providers.base import ProviderError
from imagine.storage import LocalStorage
from tests.support.api import balance, create_task, new_key, wait_done
from tests.support.images import FETCHES, image_server


def _fetcher(tmp_path: Path, **limits: Any) -> Fetcher:
    return Fetcher(
        LocalStorage(tmp_path, "http://imagine.test"),
        user_agent="test",
        allow_private=True,  # the image server is on loopback
        max_source_bytes=1_000_000,
        max_result_bytes=1_000_000,
        limits=FetchLimits(**limits),
    )


async def _until(check: Any) -> None:
    async with asyncio.timeout(60):
        while not check():  # noqa: ASYNC110 - the state is the image server's threads'
            await asyncio.sleep(0.05)


async def test_one_account_gets_a_bounded_share_of_source_downloads(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path, source_downloads_per_account=4)
    with image_server() as images:
        slow = [
            asyncio.create_task(fetcher.source_image(f"{images}/slow/share-{n}.png", "greedy"))
            for n in range(16)
        ]
        try:
            await _until(lambda: sum(task.done() for task in slow) == 12)
            # Past its share, an account's downloads are put off, not queued in a slot...
            for task in (task for task in slow if task.done()):
                error = task.exception()
                assert isinstance(error, ProviderError)
                assert error.deferred
                assert error.retryable
            await _until(lambda: sum(FETCHES[f"/slow/share-{n}.png"] for n in range(16)) == 4)
            # ... so another account's source and every result copy go through at once.
            assert (await fetcher.source_image(f"{images}/cat.png", "patient")).startswith(
                b"\x89PNG"
            )
            assert (await fetcher.result(f"{images}/cat.png")).content_type == "image/png"
            assert sum(not task.done() for task in slow) == 4
        finally:
            for task in slow:
                task.cancel()
            await asyncio.gather(*slow, return_exceptions=True)
            await fetcher.aclose()


async def test_result_copies_have_slots_of_their_own(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path, source_downloads=16)
    with image_server() as images:
        # Sixteen accounts, one slow source each: every source slot is taken.
        slow = [
            asyncio.create_task(fetcher.source_image(f"{images}/slow/full-{n}.png", f"a{n}"))
            for n in range(16)
        ]
        try:
            await _until(lambda: sum(FETCHES[f"/slow/full-{n}.png"] for n in range(16)) == 16)
            assert (await fetcher.result(f"{images}/cat.png")).data.startswith(b"\x89PNG")
            assert not any(task.done() for task in slow)
        finally:
            for task in slow:
                task.cancel()
            await asyncio.gather(*slow, return_exceptions=True)
            await fetcher.aclose()


async def test_a_download_below_the_minimum_rate_is_cut_off(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path, min_rate=1024)
    with image_server() as images:
        try:
            with pytest.raises(ProviderError) as cut:
                await fetcher.result(f"{images}/slow/trickle.png")
        finally:
            await fetcher.aclose()
    assert cut.value.retryable
    assert cut.value.message == (
        "the result arrived slower than 1024 bytes per second and was cut off"
    )


def test_a_source_that_answers_5xx_fails_after_a_few_tries(make_server: Any) -> None:
    server = make_server({"IMAGINE_ALLOW_PRIVATE_URLS": "true"})
    key = new_key(server.url, credits=100)["key"]
    with image_server() as images:
        task_id = create_task(
            server.url,
            key,
            {
                "model": "grok-imagine/image-to-video",
                "input": {"image_urls": [f"{images}/busy.png"]},
            },
        )
        data = wait_done(server.url, key, task_id, timeout=300)
    assert data["status"] == "FAILED"
    assert data["error_message"] == (f"the source URL answered HTTP 503 ({SOURCE_ATTEMPTS} tries)")
    assert data["consumed_credits"] == 0
    assert balance(server.url, key) == 100
    assert FETCHES["/busy.png"] == SOURCE_ATTEMPTS

"""The asyncio client against a real server: the main paths and errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from imagine.client import (
    AsyncClient,
    AsyncTask,
    AuthenticationError,
    NotFound,
    TaskFailed,
    WaitTimeout,
)
from tests.client.support import CuttingProxy
from tests.support.api import balance, new_key
from tests.support.server import ServerProcess


async def test_generate_wait_status_and_download(
    server: ServerProcess, key: str, tmp_path: Path
) -> None:
    async with AsyncClient(api_key=key, base_url=server.url) as client:
        created = await client.generate("an owl at night")
        assert isinstance(created, AsyncTask)
        assert created.status == "IN_PROGRESS"
        seen: list[AsyncTask] = []

        async def record(task: AsyncTask) -> None:
            seen.append(task)

        done = await created.wait(timeout=60, on_update=record)
        assert done.succeeded
        assert seen[-1] == done
        assert await client.status(done.task_id) == done
        paths = await done.download(tmp_path)
        async with httpx.AsyncClient() as plain:
            served = (await plain.get(done.result_urls[0])).content
        assert [path.read_bytes() for path in paths] == [served]


async def test_run_concurrently_and_list_over_pages(server: ServerProcess, key: str) -> None:
    async with AsyncClient(api_key=key, base_url=server.url) as client:
        finished = await asyncio.gather(*(client.run(f"cat {n}") for n in range(3)))
        assert all(task.succeeded for task in finished)
        listed = [task.task_id async for task in client.tasks(page_size=1)]
        assert sorted(listed) == sorted(task.task_id for task in finished)
        assert await client.balance() == 1000 - 3 * 5
        assert (await client.account()).balance == 985
        assert len(await client.models()) == 4
        waited = await client.generate("and wait", wait=True, timeout=60)
        assert waited.succeeded


async def test_cancel_timeout_and_failure(slow_server: ServerProcess) -> None:
    key = new_key(slow_server.url, credits=100)["key"]
    async with AsyncClient(api_key=key, base_url=slow_server.url) as client:
        task = await client.generate("cancel me")
        cancelled = await task.cancel()
        assert cancelled.error_message == "cancelled by its owner"
        assert await client.balance() == 100
        slow = await client.generate("slow")
        with pytest.raises(WaitTimeout):
            await slow.wait(timeout=0.5)
        with pytest.raises(TaskFailed) as raised:
            await client.run("fails at the deadline", timeout=120)
        assert isinstance(raised.value.task, AsyncTask)


async def test_errors_are_typed(server: ServerProcess, key: str) -> None:
    async with AsyncClient(api_key="im_wrong", base_url=server.url) as client:
        with pytest.raises(AuthenticationError):
            await client.balance()
    async with AsyncClient(api_key=key, base_url=server.url) as client:
        with pytest.raises(NotFound):
            await client.status("t00000000")


async def test_a_cut_off_generate_is_charged_once(server: ServerProcess) -> None:
    key = new_key(server.url, credits=100)["key"]
    with CuttingProxy(server.port) as proxy:
        async with AsyncClient(api_key=key, base_url=proxy.url) as client:
            task = await client.generate("exactly once, async")
        assert len(proxy.answers_dropped) == 1
    assert balance(server.url, key) == 95
    async with AsyncClient(api_key=key, base_url=server.url) as direct:
        assert [listed.task_id async for listed in direct.tasks()] == [task.task_id]

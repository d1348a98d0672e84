"""Everything one process builds once and shares: database, storage, providers, worker."""

from __future__ import annotations

import httpx

from imagine import __version__
from imagine.config import Settings
from imagine.providers.preview import PreviewProvider
from imagine.providers.registry import ProviderRouter
from imagine.services.tasks import TaskService
from imagine.sources import SourceFetcher
from imagine.storage import LocalStorage
from imagine.store.db import Database
from imagine.store.migrate import upgrade
from imagine.worker import Worker


class Runtime:
    def __init__(self, settings: Settings, *, public_url: str) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.resolved_database_url)
        self.storage = LocalStorage(settings.files_dir, public_url)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, connect=5.0),
            headers={"user-agent": f"imagine/{__version__}"},
        )
        fetch_source = SourceFetcher(
            self.storage,
            self.http,
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_download_bytes,
        )
        self.router = ProviderRouter(
            [PreviewProvider(delay=settings.preview_delay, load_source=fetch_source)],
            default=settings.provider,
        )
        self.worker = Worker(
            self.db,
            self.router,
            self.storage,
            concurrency=settings.worker_concurrency,
            poll_interval=settings.worker_poll_interval,
            lease_seconds=settings.lease_seconds,
            refresh_timeout=settings.status_refresh_timeout,
            refresh_interval=settings.status_refresh_interval,
        )
        self.tasks = TaskService(
            self.db,
            self.router,
            deadline_seconds=settings.task_deadline,
            allow_private_urls=settings.allow_private_urls,
            on_created=self.worker.wake,
            refresh=self.worker.refresh,
            is_own_url=lambda url: self.storage.local_path(url) is not None,
        )

    async def start(self, *, run_worker: bool) -> None:
        await upgrade(self.db)
        if run_worker:
            self.worker.start()

    async def close(self) -> None:
        await self.worker.stop()
        await self.router.aclose()
        await self.http.aclose()
        await self.db.dispose()

"""Everything one process builds once and shares: database, storage, providers, worker."""

from __future__ import annotations

from imagine import __version__
from imagine.config import Settings, parse_limit
from imagine.fetch import Fetcher
from imagine.providers.base import ProviderContext
from imagine.providers.registry import ProviderRouter, build_router
from imagine.services.ratelimit import GENERATE, STATUS, RateLimiter
from imagine.services.tasks.service import TaskService
from imagine.storage import build_storage
from imagine.store.db import Database
from imagine.store.migrate import prepare
from imagine.webhook_sender import WebhookSender
from imagine.worker import Worker

USER_AGENT = f"imagine/{__version__}"


def callback_url(public_url: str, provider: str, task_id: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/callbacks/{provider}/{task_id}/{token}"


def providers_for(settings: Settings, public_url: str, fetcher: Fetcher) -> ProviderRouter:
    """The configured providers; raises SettingsError (one line) when they can't run."""
    context = ProviderContext(
        settings=settings,
        load_source=fetcher.source_image,
        is_own_url=fetcher.is_own_url,
        callback_url=lambda provider, task_id, token: callback_url(
            public_url, provider, task_id, token
        ),
        user_agent=USER_AGENT,
    )
    router = build_router(settings, context)
    fetcher.trust({host for provider in router.providers() for host in provider.trusted_hosts})
    return router


class Runtime:
    def __init__(self, settings: Settings, *, public_url: str, run_worker: bool = True) -> None:
        """`run_worker`: this process runs the worker and webhook loops (else it is an API
        process of a fleet, `serve --no-worker`)."""
        self.settings = settings
        self.run_worker = run_worker
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
        self.storage = build_storage(settings, public_url)
        self.fetcher = Fetcher.from_settings(self.storage, settings, USER_AGENT)
        self.router = providers_for(settings, public_url, self.fetcher)
        self.webhooks = WebhookSender(
            self.db,
            schedule=settings.webhook_retry_schedule,
            timeout=settings.webhook_timeout,
            allow_private=settings.allow_private_urls,
            user_agent=USER_AGENT,
            poll_interval=settings.worker_poll_interval,
        )
        self.worker = Worker(
            self.db,
            self.router,
            self.storage,
            self.fetcher,
            concurrency=settings.worker_concurrency,
            failover_after=settings.failover_after,
            poll_interval=settings.worker_poll_interval,
            lease_seconds=settings.lease_seconds,
            refresh_timeout=settings.status_refresh_timeout,
            refresh_interval=settings.status_refresh_interval,
            inline_only=not run_worker,
        )
        self.limiter = RateLimiter(
            {
                GENERATE: parse_limit(settings.rate_limit_generate),
                STATUS: parse_limit(settings.rate_limit_status),
            },
            settings.redis_url,
        )
        self.tasks = TaskService(
            self.db,
            self.router,
            deadline_seconds=settings.task_deadline,
            allow_private_urls=settings.allow_private_urls,
            refresh=self.worker.refresh,
            is_own_url=self.fetcher.is_own_url,
            refresh_interval=settings.status_refresh_interval,
        )

    async def start(self) -> None:
        # An empty database gets its schema; one behind or ahead stops the start.
        await prepare(self.db)
        if self.run_worker:
            # Tasks created by other processes wake this worker at once (PostgreSQL).
            await self.db.listen()
            self.worker.start()
            self.webhooks.start()

    async def close(self) -> None:
        await self.worker.stop()
        await self.webhooks.stop()
        await self.router.aclose()
        await self.fetcher.aclose()
        await self.db.dispose()

"""What the routes call about tasks: create one, read its status, wait for it, cancel it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta

from imagine.clock import utc_now
from imagine.errors import ImagineError, InvalidInput, TaskAlreadyEnded, TaskNotFound
from imagine.ids import new_task_id
from imagine.providers.base import source_index_problem
from imagine.providers.registry import ProviderRouter, UnknownProvider
from imagine.schemas import Cancelled, GenerateRequest, StatusData
from imagine.services.keys import Caller, PresentedKey, authenticate_hash
from imagine.services.tasks import idempotency, lifecycle, validation
from imagine.services.tasks.idempotency import Created
from imagine.services.tasks.lifecycle import Owner, Refused
from imagine.services.tasks.payloads import status_data
from imagine.services.tasks.sources import usable_source
from imagine.services.tasks.status import Refresh, StatusReader
from imagine.states import TaskStatus
from imagine.store import idempotency as idempotency_repo
from imagine.store import tasks as repo
from imagine.store.db import Database, Tx
from imagine.store.tasks import TaskView


class TaskService:
    def __init__(
        self,
        db: Database,
        router: ProviderRouter,
        *,
        deadline_seconds: float,
        allow_private_urls: bool,
        refresh: Refresh | None = None,
        is_own_url: Callable[[str], bool] = lambda _: False,
        refresh_interval: float = 1.0,
    ) -> None:
        self._db = db
        self._router = router
        self._deadline = timedelta(seconds=deadline_seconds)
        self._allow_private = allow_private_urls
        self._is_own_url = is_own_url
        self._reader = StatusReader(db, refresh=refresh, refresh_interval=refresh_interval)

    async def create(
        self, owner: Owner, request: GenerateRequest, idempotency_key: str | None = None
    ) -> Created:
        """Validate, debit and store a task in one transaction.

        `owner` is the caller, or the key it presented: then the key is checked in the
        create itself (on PostgreSQL the whole create is one statement), and an invalid
        key is still told so before anything wrong with the request.

        With an idempotency key, the key's first task is given back (and nothing charged)
        when the same key comes again with the same body within a day; with another body
        it is refused."""
        if isinstance(owner, PresentedKey) and (
            idempotency_key or request.input.task_id is not None
        ):
            # Both read the account's rows before the write: know the account first.
            owner = await authenticate_hash(self._db, owner.key_hash)
        try:
            task = await self._new_task(owner, request)
        except ImagineError:
            if isinstance(owner, PresentedKey):
                await authenticate_hash(self._db, owner.key_hash)
            raise
        request_hash = idempotency.fingerprint(request) if idempotency_key else ""

        async def store(tx: Tx) -> Created:
            now = utc_now()
            if idempotency_key:
                assert isinstance(owner, Caller)
                earlier = await idempotency_repo.find(tx, owner.account_id, idempotency_key)
                if earlier is not None:
                    replayed = idempotency.replay(earlier, request_hash, now, owner)
                    if replayed is not None:
                        return replayed
                    await idempotency_repo.forget(tx, owner.account_id, idempotency_key)
            caller = await lifecycle.create(tx, task, owner, now=now)
            if idempotency_key:
                await idempotency_repo.remember(
                    tx, caller.account_id, idempotency_key, request_hash, task.id, now
                )
            return Created(task.id, TaskStatus.IN_PROGRESS, replayed=False, owner=caller)

        try:
            # Without an idempotency key, the create is one statement on PostgreSQL.
            return await self._db.write(store, one_statement=not idempotency_key)
        except Exception as exc:
            if not (idempotency_key and idempotency.is_conflict(exc)):
                raise
            # Two requests with one key at the same moment: the other one stored first.
            return await self._db.write(store)

    async def _new_task(self, owner: Owner, request: GenerateRequest) -> lifecycle.NewTask:
        """The task a request asks for, validated and routed; raises what is wrong."""
        spec = validation.model_of(request)
        validation.check_inputs(
            spec, request.input, allow_private=self._allow_private, is_own_url=self._is_own_url
        )
        validation.check_callback_url(request.callback_url, allow_private=self._allow_private)
        source = None
        if request.input.task_id is not None:
            assert isinstance(owner, Caller)
            source_id, account_id = request.input.task_id, owner.account_id
            row = await self._db.read(
                lambda tx: repo.get_task(tx, source_id, account_id=account_id)
            )
            source = usable_source(spec, source_id, row)
        shown = validation.sanitized_request(request)
        index_problem = source_index_problem(shown["input"], source)
        if index_problem is not None:
            raise InvalidInput(index_problem)
        provider = self._router.route(spec.name, shown["input"], source)
        return lifecycle.NewTask(
            id=new_task_id(),
            model=spec.name,
            request=shown,
            callback_url=request.callback_url,
            public=request.public,
            credits=spec.credits,
            source_task_id=source.task_id if source else None,
            provider=provider.name,
            callback_token=secrets.token_urlsafe(24),
            deadline=self._deadline,
        )

    async def status(self, caller: Caller, task_id: str) -> TaskView:
        return await self._reader.status(caller, task_id)

    async def status_data(self, caller: Caller, task_id: str) -> StatusData:
        return status_data(await self._reader.status(caller, task_id))

    async def status_data_for_key(self, key_hash: str, task_id: str) -> StatusData:
        return await self._reader.data_for_key(key_hash, task_id)

    async def wait_for(self, caller: Caller, task_id: str, seconds: float) -> StatusData | None:
        return await self._reader.wait_for(caller, task_id, seconds)

    async def cancel(self, caller: Caller, task_id: str) -> Cancelled:
        """Cancel an unfinished task (it ends FAILED). The policy (README, "Cancelling and
        waiting"): credits come back when no paid provider can have started the task: it
        runs on the offline preview engine, or it has not been sent upstream and nobody is
        sending it. Once an AI provider has it, that work is paid for upstream and the
        credits are kept; the task reports them as consumed. Decided inside the write
        (lifecycle.cancel), so a submit racing the cancel can't make it refund paid work."""
        task = await self._db.read(
            lambda tx: repo.get_task(tx, task_id, account_id=caller.account_id)
        )
        if task is None:
            raise TaskNotFound(task_id)
        if task.status is not TaskStatus.IN_PROGRESS:
            raise TaskAlreadyEnded(task_id, task.status)
        try:
            paid = self._router.get(task.provider).engine != "preview"
        except UnknownProvider:
            paid = True
        now = utc_now()
        ended = await self._db.write(
            lambda tx: lifecycle.cancel(tx, task, paid_provider=paid, now=now)
        )
        if isinstance(ended, Refused):
            raise TaskAlreadyEnded(task_id)
        return {
            "task_id": task.id,
            "status": TaskStatus.FAILED,
            "cancelled": True,
            "refunded": ended.refunded,
            "consumed_credits": 0 if ended.refunded else task.credits,
        }

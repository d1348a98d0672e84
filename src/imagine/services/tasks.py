"""The task lifecycle: creation (with its debit), the status view, and the two ways a
task ends. Every transition to SUCCESS or FAILED goes through `finish_success` or
`finish_failure`; both are guarded so that a task ends once and is refunded once."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from imagine import catalog
from imagine.catalog import ModelSpec, Output
from imagine.clock import iso_z, utc_now
from imagine.errors import BadRequest, Conflict, InvalidInput, NotFound
from imagine.ids import new_task_id
from imagine.netguard import known_refusal, url_problem, url_without_secrets
from imagine.providers.base import SourceTask, source_index_problem
from imagine.providers.registry import ProviderRouter, UnknownProvider
from imagine.schemas import GenerateInput, GenerateRequest
from imagine.services import billing, webhooks
from imagine.services.keys import Caller, invalid_key
from imagine.store import accounts as accounts_repo
from imagine.store import idempotency
from imagine.store import tasks as repo
from imagine.store.db import Database, Tx
from imagine.store.tasks import FAILED, IN_PROGRESS, SUCCESS, TaskRow, TaskView

WAIT_POLL = 0.25
"""Seconds between looks at a task a `Prefer: wait` request is waiting for."""
FINISHED_CACHE_SIZE = 20_000
"""Status answers of finished tasks kept in memory (a few MB at most)."""


class TaskService:
    def __init__(
        self,
        db: Database,
        router: ProviderRouter,
        *,
        deadline_seconds: float,
        allow_private_urls: bool,
        on_created: Callable[[], None] = lambda: None,
        refresh: Callable[[str], Awaitable[TaskRow | None]] | None = None,
        is_own_url: Callable[[str], bool] = lambda _: False,
        refresh_interval: float = 1.0,
    ) -> None:
        self._db = db
        self._refresh_interval = timedelta(seconds=refresh_interval)
        self._router = router
        self._deadline = timedelta(seconds=deadline_seconds)
        self._allow_private = allow_private_urls
        self._on_created = on_created
        self._refresh = refresh
        self._is_own_url = is_own_url
        self._finished: dict[str, tuple[str, dict[str, Any]]] = {}

    async def create(
        self, caller: Caller, request: GenerateRequest, idempotency_key: str | None = None
    ) -> Created:
        """Validate, debit and store a task in one transaction.

        With an idempotency key, the key's first task is given back (and nothing charged)
        when the same key comes again with the same body within a day; with another body
        it is refused."""
        spec = catalog.get_model(request.model)
        if spec is None:
            raise InvalidInput(
                f"model: unknown model {request.model!r}; use one of " + ", ".join(catalog.MODELS)
            )
        check_inputs(
            spec, request.input, allow_private=self._allow_private, is_own_url=self._is_own_url
        )
        if request.callback_url is not None:
            problem = url_problem(request.callback_url)
            if problem is not None:
                raise InvalidInput(f"callback_url: {problem}")
            refusal = known_refusal(request.callback_url, allow_private=self._allow_private)
            if refusal is not None:
                raise BadRequest(f"callback_url: {refusal}, which this server does not call")
        source = None
        if request.input.task_id is not None:
            source = source_task(await self._check_source(caller, spec, request.input.task_id))
        shown = sanitized_request(request)
        index_problem = source_index_problem(shown["input"], source)
        if index_problem is not None:
            raise InvalidInput(index_problem)
        provider = self._router.route(spec.name, shown["input"], source)

        task_id = new_task_id()
        callback_token = secrets.token_urlsafe(24)
        fingerprint = request_fingerprint(request) if idempotency_key else ""

        async def store(tx: Tx) -> Created:
            now = utc_now()
            if idempotency_key:
                earlier = await idempotency.find(tx, caller.account_id, idempotency_key)
                if earlier is not None:
                    replayed = _replay(earlier, fingerprint, now)
                    if replayed is not None:
                        return replayed
                    await idempotency.forget(tx, caller.account_id, idempotency_key)
            await billing.debit_task(
                tx,
                account_id=caller.account_id,
                task_id=task_id,
                amount=spec.credits,
                model=spec.name,
                now=now,
            )
            await repo.insert_task(
                tx,
                id=task_id,
                account_id=caller.account_id,
                api_key_id=caller.key_id,
                model=spec.name,
                status=IN_PROGRESS,
                request=shown,
                callback_url=request.callback_url,
                public=request.public,
                credits=spec.credits,
                refunded=False,
                source_task_id=source.task_id if source else None,
                provider=provider.name,
                callback_token=callback_token,
                attempts=0,
                next_check_at=now,
                deadline_at=now + self._deadline,
                created_at=now,
                updated_at=now,
            )
            if idempotency_key:
                await idempotency.remember(
                    tx, caller.account_id, idempotency_key, fingerprint, task_id, now
                )
            return Created(task_id, IN_PROGRESS, replayed=False)

        try:
            created = await self._db.write(store)
        except Exception as exc:
            if not (idempotency_key and _is_conflict(exc)):
                raise
            # Two requests with one key at the same moment: the other one stored first.
            created = await self._db.write(store)
        if not created.replayed:
            self._on_created()
        return created

    async def status(self, caller: Caller, task_id: str) -> TaskView:
        """The task; while it is in progress, refreshed from its provider first (bounded)."""
        view = await self._db.read(
            lambda tx: repo.get_view(tx, task_id, caller.account_id), snapshot=False
        )
        if view is None:
            # Another account's task answers exactly like a missing one.
            raise NotFound(f"task {task_id} not found")
        return await self._refreshed(view)

    async def status_data_for_key(self, key_hash: str, task_id: str) -> dict[str, Any]:
        """The status answer's data, authenticating the key in the same statement.

        This is what polling clients call in loops. A finished task's answer never changes
        (SUCCESS and FAILED are final), so it is kept in a bounded cache; the key is still
        checked against the database on every call, so a revoked key is refused at once.
        """
        cached = self._finished.get(task_id)
        if cached is not None:
            found_key = await self._db.read(
                lambda tx: accounts_repo.find_active_key(tx, key_hash), snapshot=False
            )
            if found_key is None:
                raise invalid_key()
            if found_key[1] != cached[0]:
                raise NotFound(f"task {task_id} not found")
            return cached[1]
        found = await self._db.read(
            lambda tx: repo.get_view_for_key(tx, key_hash, task_id), snapshot=False
        )
        if found is None:
            raise invalid_key()
        view = found[2]
        if view is None:
            raise NotFound(f"task {task_id} not found")
        view = await self._refreshed(view)
        data = status_data(view)
        if view.status != IN_PROGRESS:
            self._remember_finished(task_id, found[1], data)
        return data

    async def wait_for(self, caller: Caller, task_id: str, seconds: float) -> dict[str, Any] | None:
        """The status data once the task ends, if it does within `seconds`; else None."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            view = await self.status(caller, task_id)
            if view.status != IN_PROGRESS:
                return status_data(view)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            await asyncio.sleep(min(WAIT_POLL, left))

    def _remember_finished(self, task_id: str, account_id: str, data: dict[str, Any]) -> None:
        finished = self._finished
        if len(finished) >= FINISHED_CACHE_SIZE:
            del finished[next(iter(finished))]  # the oldest entry
        finished[task_id] = (account_id, data)

    async def _refreshed(self, view: TaskView) -> TaskView:
        if view.status == IN_PROGRESS and self._refresh is not None and self._refresh_due(view):
            refreshed = await self._refresh(view.id)
            if refreshed is not None:
                return TaskView.of(refreshed)
        return view

    def _refresh_due(self, view: TaskView) -> bool:
        """Whether the provider may be asked now; checked again, atomically, by the claim.
        Answering no here costs a status call no write (clients poll unfinished tasks)."""
        if view.attempts > 0:
            return False  # backing off after an upstream error
        return view.checked_at is None or utc_now() - view.checked_at >= self._refresh_interval

    async def _check_source(self, caller: Caller, spec: ModelSpec, source_id: str) -> TaskRow:
        source = await self._db.read(
            lambda tx: repo.get_task(tx, source_id, account_id=caller.account_id)
        )
        if source is None:
            raise InvalidInput(f"input.task_id: no task {source_id} in this account")
        source_spec = catalog.get_model(source.model)
        if source_spec is None or source_spec.output is not Output.IMAGE:
            raise InvalidInput(
                f"input.task_id: task {source_id} made a video; {spec.name} needs an image task"
            )
        if source.status != SUCCESS:
            raise InvalidInput(
                f"input.task_id: task {source_id} is {source.status}; "
                f"{spec.name} needs a task that finished with SUCCESS"
            )
        return source


IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Created:
    task_id: str
    status: str
    replayed: bool
    """An idempotent retry: the task created by the key's first request."""


def request_fingerprint(request: GenerateRequest) -> str:
    body = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def _replay(
    earlier: tuple[str, str, datetime, str], fingerprint: str, now: datetime
) -> Created | None:
    """The earlier task for a repeated key, None when the key has expired; raises for a
    key reused with another body."""
    request_hash, task_id, created_at, status = earlier
    if now - created_at > IDEMPOTENCY_WINDOW:
        return None
    if request_hash != fingerprint:
        raise InvalidInput(
            "Idempotency-Key: already used with a different request body; "
            "use a new key for a new request"
        )
    return Created(task_id, status, replayed=True)


def _is_conflict(exc: Exception) -> bool:
    """A unique-key violation, from either engine's driver."""
    return "IntegrityError" in type(exc).__name__ or "UniqueViolation" in type(exc).__name__


def check_inputs(
    spec: ModelSpec,
    given: GenerateInput,
    *,
    allow_private: bool,
    is_own_url: Callable[[str], bool] = lambda _: False,
) -> None:
    """Each model's required inputs; raises InvalidInput naming the field."""
    if spec.needs_prompt and not (given.prompt and given.prompt.strip()):
        raise InvalidInput(f"input.prompt: required for {spec.name}")
    if spec.needs_image:
        if given.image_urls and given.task_id:
            raise InvalidInput("input: give input.image_urls or input.task_id, not both")
        if not given.image_urls and not given.task_id:
            raise InvalidInput(
                f"input.image_urls: required for {spec.name} "
                "(or give input.task_id of an earlier image task)"
            )
    if spec.needs_task:
        if not given.task_id:
            raise InvalidInput(
                f"input.task_id: required for {spec.name}: the id of a finished image task"
            )
        if given.image_urls:
            raise InvalidInput(f"input.image_urls: {spec.name} takes input.task_id only")
    if not (spec.needs_image or spec.needs_task):
        if given.image_urls:
            raise InvalidInput(f"input.image_urls: not used by {spec.name}")
        if given.task_id:
            raise InvalidInput(f"input.task_id: not used by {spec.name}")
    if given.image_urls is not None and not given.image_urls and spec.needs_image:
        raise InvalidInput("input.image_urls: give one image URL")
    _check_options(spec, given)
    for index, url in enumerate(given.image_urls or []):
        problem = url_problem(url)
        if problem is not None:
            raise InvalidInput(f"input.image_urls[{index}]: {problem}")
        # Our own result URLs are read from storage, never fetched.
        refusal = None if is_own_url(url) else known_refusal(url, allow_private=allow_private)
        if refusal is not None:
            raise BadRequest(
                f"input.image_urls[{index}]: {refusal}, which this server does not fetch"
            )


OPTION_NAMES = ("aspect_ratio", "mode", "duration", "resolution", "index")


def _check_options(spec: ModelSpec, given: GenerateInput) -> None:
    """The optional inputs: each only where the model takes it, with a documented value."""
    for name in OPTION_NAMES:
        value = getattr(given, name)
        if value is None:
            continue
        allowed = spec.options.get(name)
        if allowed is None:
            raise InvalidInput(f"input.{name}: not used by {spec.name}")
        if str(value) not in allowed:
            raise InvalidInput(f"input.{name}: must be one of " + ", ".join(allowed))
    if given.index is not None and not given.task_id:
        raise InvalidInput(
            "input.index: only with input.task_id (it picks one of that task's images)"
        )
    if given.mode == "spicy" and given.image_urls:
        raise InvalidInput(
            "input.mode: spicy is not available with input.image_urls; "
            "use input.task_id of an image task, or mode fun or normal"
        )


def sanitized_request(request: GenerateRequest) -> dict[str, Any]:
    """The submitted payload as the status call shows it: no credentials, no query strings."""
    shown: dict[str, Any] = {
        "model": request.model,
        "input": request.input.model_dump(exclude_none=True),
    }
    if request.callback_url is not None:
        shown["callback_url"] = url_without_secrets(request.callback_url)
    if request.public:
        shown["public"] = True
    return shown


def source_task(row: TaskRow) -> SourceTask:
    """An earlier task as a provider sees it when a new one chains on it."""
    return SourceTask(
        task_id=row.id,
        model=row.model,
        provider=row.provider,
        upstream_id=row.upstream_id,
        result_urls=list(row.result_urls or []),
    )


def status_data(task: TaskView) -> dict[str, Any]:
    """The `data` of a status answer, exactly the API document's fields (plus completed_at)."""
    return {
        "task_id": task.id,
        "status": task.status,
        "request": task.request,
        "response": {"resultUrls": task.result_urls or []} if task.status == SUCCESS else None,
        "consumed_credits": 0 if task.refunded else task.credits,
        "error_message": task.error_message if task.status == FAILED else None,
        "created_at": iso_z(task.created_at),
        "completed_at": iso_z(task.finished_at) if task.finished_at else None,
    }


async def finish_success(db: Database, task: TaskRow, worker_id: str, urls: list[str]) -> bool:
    """End the task with its results (and queue its webhook), in one transaction."""
    now = utc_now()

    async def succeed(tx: Tx) -> bool:
        ended = await repo.update_leased(
            tx,
            task.id,
            worker_id,
            status=SUCCESS,
            result_urls=urls,
            finished_at=now,
            updated_at=now,
            checked_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        if ended:
            await _queue_webhook(tx, task, SUCCESS, now, result_urls=urls)
        return ended

    return await db.write(succeed)


async def _queue_webhook(
    tx: Tx,
    task: TaskRow,
    status: str,
    now: datetime,
    *,
    result_urls: list[str] | None = None,
    error_message: str | None = None,
    refunded: bool | None = None,
) -> None:
    if task.callback_url is None:
        return
    final = TaskView(
        id=task.id,
        status=status,
        request=task.request,
        result_urls=result_urls,
        refunded=status == FAILED if refunded is None else refunded,
        credits=task.credits,
        error_message=error_message,
        created_at=task.created_at,
        finished_at=now,
        checked_at=now,
        attempts=0,
    )
    await webhooks.enqueue(
        tx,
        task_id=task.id,
        account_id=task.account_id,
        url=task.callback_url,
        data=status_data(final),
        now=now,
    )


async def finish_failure(db: Database, task: TaskRow, worker_id: str, message: str) -> bool:
    """Fail the task and refund its credits, in one transaction; False if it already ended."""
    now = utc_now()
    # Upstream messages are not ours to trust: no NUL (PostgreSQL can't store it), bounded.
    message = message.replace("\x00", "")[:2000]

    async def fail(tx: Tx) -> bool:
        ended = await repo.update_leased(
            tx,
            task.id,
            worker_id,
            status=FAILED,
            error_message=message,
            refunded=True,
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        if ended:
            await billing.refund_task(
                tx, account_id=task.account_id, task_id=task.id, amount=task.credits, now=now
            )
            await _queue_webhook(tx, task, FAILED, now, error_message=message)
        return ended

    return await db.write(fail)


CANCELLED = "cancelled by its owner"


async def cancel_task(
    db: Database, router: ProviderRouter, caller: Caller, task_id: str
) -> dict[str, Any]:
    """Cancel an unfinished task (it ends FAILED). The policy (README, "Cancelling and
    waiting"): credits come back when no paid provider can have started the task: it runs
    on the offline preview engine, or it has not been sent upstream and nobody is sending
    it. Once an AI provider has it, that work is paid for upstream and the credits are
    kept; the task reports them as consumed. Decided inside the write, so a submit racing
    the cancel can't make it refund paid work."""
    task = await db.read(lambda tx: repo.get_task(tx, task_id, account_id=caller.account_id))
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if task.status != IN_PROGRESS:
        raise Conflict(f"task {task_id} already ended with {task.status}; nothing to cancel")
    try:
        offline = router.get(task.provider).engine == "preview"
    except UnknownProvider:
        offline = False
    now = utc_now()

    async def end(tx: Tx) -> bool | None:
        """True: cancelled and refunded; False: cancelled, credits kept; None: ended."""
        free = await repo.cancel(
            tx,
            task.id,
            caller.account_id,
            message=CANCELLED,
            refunded=True,
            now=now,
            only_unsent=not offline,
        )
        message_kept = f"{CANCELLED} after {task.provider} started it; its credits are kept"
        if not free and not await repo.cancel(
            tx, task.id, caller.account_id, message=message_kept, refunded=False, now=now
        ):
            return None
        if free:
            await billing.refund_task(
                tx, account_id=task.account_id, task_id=task.id, amount=task.credits, now=now
            )
        message = CANCELLED if free else message_kept
        await _queue_webhook(tx, task, FAILED, now, error_message=message, refunded=free)
        return free

    refunded = await db.write(end)
    if refunded is None:
        raise Conflict(f"task {task_id} ended meanwhile; nothing to cancel")
    return {
        "task_id": task.id,
        "status": FAILED,
        "cancelled": True,
        "refunded": refunded,
        "consumed_credits": 0 if refunded else task.credits,
    }

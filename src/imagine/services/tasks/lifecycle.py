"""The life of a task: every write to a task row, one named transition each.

    create ──▶ IN_PROGRESS, due ──claim_due / claim_for_refresh──▶ IN_PROGRESS, leased
                    ▲  (or waiting for next_check_at)                    │
                    │  record_submission, schedule_next_check, defer,    │ renew_lease
                    └─ retry_later, fail_over, release (lease handed back)┤
                                                                          ├─ succeed ─▶ SUCCESS
                                                                          └─ fail, expire ─▶ FAILED
    IN_PROGRESS, held or not ──cancel──▶ FAILED       ──store_callback──▶ IN_PROGRESS, due now

Each transition is one guarded statement: it names the states it may leave in its WHERE
clause, so a task that is elsewhere (already final, or leased by another worker since)
is simply not matched, and the transition answers `Refused` having written nothing. A
worker's transitions take its `Lease`: a worker whose lease another has taken over can't
write. SUCCESS and FAILED are final: no transition leaves them.

The money and the promises move with the state, in the same transaction: `create` debits
the price, `fail`, `expire` and a free `cancel` refund it (the ledger's unique (task,
kind) makes a second refund impossible), and every transition into a final state queues
the task's webhook. Transitions that make work due announce it on the transaction
(store/wakeups.py), so whoever waits hears of it once it is committed.

Docs: docs/design.md, "A task's life", has the diagram with the module that calls each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    SmallInteger,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.sql.dml import Update

from imagine.errors import InvalidKey
from imagine.services import billing, webhooks
from imagine.services.keys import Caller, PresentedKey
from imagine.services.tasks.payloads import status_data
from imagine.states import LedgerKind, TaskStatus
from imagine.store import accounts as accounts_repo
from imagine.store.db import Tx
from imagine.store.query import Batching, Query
from imagine.store.schema import accounts, api_keys, ledger, tasks
from imagine.store.tasks import TaskRow, TaskView
from imagine.store.types import UTCDateTime
from imagine.store.wakeups import Due

IN_PROGRESS = TaskStatus.IN_PROGRESS
CANCELLED = "cancelled by its owner"
MAX_MESSAGE = 2000
"""Characters of an upstream's failure message kept."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a task, from a claim: what its transitions need."""

    task_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class NewTask:
    """What `create` stores besides its owner; the rest of the row starts empty."""

    id: str
    model: str
    request: dict[str, Any]
    callback_url: str | None
    public: bool
    credits: int
    source_task_id: str | None
    provider: str
    callback_token: str
    deadline: timedelta
    """How long it may take: it fails, refunded, this long after its creation."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The transition was made: the task is now in `status`."""

    task_id: str
    status: TaskStatus
    refunded: bool = False
    """Whether this transition gave the task's credits back."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The task was not in a state this transition may leave; nothing was written."""

    task_id: str
    transition: str
    needs: str
    """The state the transition may leave, in words."""


Result = Applied | Refused

# -- the guards -------------------------------------------------------------------------
# Bind parameters of an UPDATE may not be named like a column of its table (SQLAlchemy
# reserves those names for SET, as on PostgreSQL): hence "task_id", "owner_id".

_now = bindparam("now", type_=UTCDateTime)
_this_task = tasks.c.id == bindparam("task_id")
_unfinished = tasks.c.status == IN_PROGRESS
_unleased = or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < _now)
_held = and_(_this_task, _unfinished, tasks.c.lease_owner == bindparam("worker_id"))
_unsent = tasks.c.upstream_id.is_(None)
HELD = "IN_PROGRESS, leased by this worker"
HELD_UNSENT = "IN_PROGRESS, leased by this worker, not sent upstream"

_released: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
_callback_read = bindparam("callback_read", type_=Boolean)
_scheduled: dict[str, Any] = {
    # A callback that arrived while the step ran (so the step did not read it) keeps the
    # task due now; one the step read is cleared, so that retries keep their backoff.
    "next_check_at": case(
        (and_(tasks.c.upstream_callback.is_not(None), not_(_callback_read)), _now),
        else_=bindparam("next_check_at", type_=UTCDateTime),
    ),
    "upstream_callback": case((_callback_read, null()), else_=tasks.c.upstream_callback),
    "updated_at": _now,
}


def _leased_update(*guards: Any, **values: Any) -> Query:
    statement: Update = update(tasks).where(_held, *guards).values(values)
    return Query(statement)


def _lease_params(lease: Lease) -> dict[str, Any]:
    return {"task_id": lease.task_id, "worker_id": lease.worker_id}


async def _leased(
    tx: Tx, name: str, query: Query, lease: Lease, needs: str = HELD, **params: Any
) -> Result:
    if await tx.run(query, {**_lease_params(lease), **params}) == 1:
        return Applied(lease.task_id, IN_PROGRESS)
    return Refused(lease.task_id, name, needs)


# -- create -----------------------------------------------------------------------------


Owner = Caller | PresentedKey

_NEW_COLUMNS = tuple(name for name in NewTask.__dataclass_fields__ if name != "deadline")
_insert = Query(
    insert(tasks).values(
        {name: bindparam(name) for name in (*_NEW_COLUMNS, "account_id", "api_key_id")}
        | {
            "deadline_at": bindparam("deadline_at"),
            "status": IN_PROGRESS,
            "refunded": False,
            "attempts": 0,
            "next_check_at": _now,
            "created_at": _now,
            "updated_at": _now,
        }
    )
)


# The same in one statement (PostgreSQL, whose writes compose in CTEs): the debit, its
# ledger row and the task in one round trip with no transaction around it, so an
# account's row lock is held for as short as can be. Given a key hash, the key is looked
# up in the statement too; an unknown or revoked key, like a balance too low, debits
# nothing and stores nothing.
_credits = bindparam("credits", type_=ledger.c.amount.type)
_active_key = (
    select(api_keys.c.id, api_keys.c.account_id)
    .where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
    .cte("presented")
)


def _debit(account: Any, *extra: Any) -> Any:
    return (
        update(accounts)
        .where(accounts.c.id == account, accounts.c.balance >= _credits)
        .values(balance=accounts.c.balance - _credits, updated_at=_now)
        .returning(accounts.c.id.label("account_id"), accounts.c.balance, *extra)
        .cte("debit")
    )


def _create_in_one(debit: Any, key_id: Any, *, order: str) -> Query:
    debited = (
        insert(ledger)
        .from_select(
            ["account_id", "kind", "amount", "balance_after", "task_id", "created_at"],
            select(
                debit.c.account_id,
                literal(LedgerKind.DEBIT, type_=ledger.c.kind.type),
                -_credits,
                debit.c.balance,
                bindparam("id", type_=ledger.c.task_id.type),
                _now,
            ),
        )
        .cte("debited")
    )
    new_task: dict[str, Any] = {
        **{name: bindparam(name, type_=tasks.c[name].type) for name in _NEW_COLUMNS},
        "account_id": debit.c.account_id,
        "api_key_id": key_id,
        "deadline_at": bindparam("deadline_at", type_=UTCDateTime),
        "status": literal(IN_PROGRESS, type_=tasks.c.status.type),
        "refunded": literal(False),
        "attempts": literal(0),
        "next_check_at": _now,
        "created_at": _now,
        "updated_at": _now,
    }
    stored = (
        insert(tasks)
        .from_select(list(new_task), select(*new_task.values()).select_from(debit))
        .cte("stored")
    )
    answer = select(
        bindparam("id", type_=tasks.c.id.type).label("id"),
        debit.c.account_id,
        key_id.label("key_id"),
    )
    # Creates that arrive together commit together (store/batches.py), each finding its
    # answer by its task id, taking the account row locks in the order of `order`.
    return Query(
        answer.add_cte(debited).add_cte(stored), batching=Batching(key=("id",), order=order)
    )


_by_caller = _debit(bindparam("account_id", type_=accounts.c.id.type))
_create_for_caller = _create_in_one(
    _by_caller, bindparam("api_key_id", type_=tasks.c.api_key_id.type), order="account_id"
)
_by_key = _debit(_active_key.c.account_id, _active_key.c.id.label("key_id"))
_create_for_key = _create_in_one(_by_key, _by_key.c.key_id, order="key_hash")


async def create(tx: Tx, task: NewTask, owner: Owner, *, now: datetime) -> Caller:
    """Nothing → IN_PROGRESS, due now, owned by `owner`, whom it answers with. Debits the
    price first: raises InsufficientCredits (and stores nothing) when the balance can't
    cover it, and InvalidKey when a presented key is unknown or revoked.

    A `tx` of one statement (`Database.write(..., one_statement=True)`, PostgreSQL)
    does it all in that statement, the key check included."""
    params: dict[str, Any] = {name: getattr(task, name) for name in _NEW_COLUMNS}
    params |= {"deadline_at": now + task.deadline, "now": now}
    if tx.one_statement:
        if isinstance(owner, PresentedKey):
            row = await tx.one(_create_for_key, {**params, "key_hash": owner.key_hash})
        else:
            row = await tx.one(
                _create_for_caller,
                {**params, "account_id": owner.account_id, "api_key_id": owner.key_id},
            )
        if row is None:
            raise await _not_created(tx, task, owner)
        tx.announce(Due.WORK)
        return Caller(key_id=row["key_id"], account_id=row["account_id"])
    caller = await _caller(tx, owner)
    await billing.debit_task(
        tx,
        account_id=caller.account_id,
        task_id=task.id,
        amount=task.credits,
        model=task.model,
        now=now,
    )
    await tx.run(_insert, {**params, "account_id": caller.account_id, "api_key_id": caller.key_id})
    tx.announce(Due.WORK)
    return caller


async def _caller(tx: Tx, owner: Owner) -> Caller:
    if isinstance(owner, Caller):
        return owner
    found = await accounts_repo.find_active_key(tx, owner.key_hash)
    if found is None:
        raise InvalidKey()
    return Caller(key_id=found.key_id, account_id=found.account_id)


async def _not_created(tx: Tx, task: NewTask, owner: Owner) -> Exception:
    """Why a create of one statement stored nothing: the key, or else the balance."""
    caller = await _caller(tx, owner)
    return await billing.insufficient(tx, caller.account_id, task.model, task.credits)


# -- claims -----------------------------------------------------------------------------


def _claim(candidates: Any) -> Query:
    # One statement picks and leases; on PostgreSQL the pick skips rows other workers are
    # claiming right now (SKIP LOCKED), so any number of workers share the queue, and the
    # outer conditions re-check each row once it is locked.
    chosen = candidates.limit(bindparam("limit")).with_for_update(skip_locked=True)
    lease: dict[str, Any] = {
        "lease_owner": bindparam("worker_id"),
        "lease_expires_at": bindparam("lease_until", type_=UTCDateTime),
    }
    picked = tasks.c.id.in_(chosen.scalar_subquery())
    # On PostgreSQL the pick is a CTE, which runs once. As `IN (subquery)` the planner may
    # rescan it for each row (a nested-loop semi join), and every rescan skips the rows
    # this statement has just leased and locks the next ones: one claim took every due
    # task, whatever the limit.
    pick = chosen.cte("picked")
    return Query(
        update(tasks)
        .where(tasks.c.id.in_(select(pick.c.id)), _unfinished, _unleased)
        .values(lease)
        .returning(*tasks.c),
        # SQLite has one writer at a time, so the pick can't go stale; and with the outer
        # conditions its planner walks every unfinished task by status instead of looking
        # the picked ids up (measured: 7.6 ms per claim with 8,600 tasks, 0.03 ms without).
        sqlite=update(tasks).where(picked).values(lease).returning(*tasks.c),
    )


_claim_due = _claim(
    select(tasks.c.id)
    .where(_unfinished, _unleased, tasks.c.next_check_at <= _now)
    .order_by(tasks.c.next_check_at)
)
# The status call's inline refresh: never while the task backs off after an error (a
# 429's Retry-After holds for clients that poll too), and at most once per interval.
_refreshable = (
    _this_task,
    _unfinished,
    tasks.c.attempts == 0,
    _unleased,
    or_(
        tasks.c.checked_at.is_(None),
        tasks.c.checked_at <= bindparam("checked_before", type_=UTCDateTime),
    ),
)
_claim_for_refresh = _claim(select(tasks.c.id).where(*_refreshable))
# An API process that runs no worker refreshes only what one upstream status query can
# settle: a task already sent, whose results are not waiting to be copied.
_claim_sent_for_refresh = _claim(
    select(tasks.c.id).where(
        *_refreshable, tasks.c.upstream_id.is_not(None), tasks.c.results_to_copy.is_(None)
    )
)


async def claim_due(
    tx: Tx, *, worker_id: str, now: datetime, lease_until: datetime, limit: int
) -> list[TaskRow]:
    """IN_PROGRESS, due and unleased → IN_PROGRESS, leased by `worker_id` until
    `lease_until`: up to `limit` tasks, the longest-waiting first."""
    rows = await tx.all(
        _claim_due,
        {"worker_id": worker_id, "now": now, "lease_until": lease_until, "limit": limit},
    )
    return [TaskRow(**row) for row in rows]


async def claim_for_refresh(
    tx: Tx,
    task_id: str,
    *,
    worker_id: str,
    now: datetime,
    lease_until: datetime,
    checked_before: datetime,
    sent_only: bool = False,
) -> TaskRow | Refused:
    """IN_PROGRESS, unleased, not backing off after an error and not asked since
    `checked_before` → IN_PROGRESS, leased: due or not (the status call's refresh).
    `sent_only`: only a task already sent upstream whose results are not waiting to be
    copied (the refresh of a process that runs no worker)."""
    rows = await tx.all(
        _claim_sent_for_refresh if sent_only else _claim_for_refresh,
        {
            "task_id": task_id,
            "worker_id": worker_id,
            "now": now,
            "lease_until": lease_until,
            "checked_before": checked_before,
            "limit": 1,
        },
    )
    if rows:
        return TaskRow(**rows[0])
    return Refused(task_id, "claim_for_refresh", "IN_PROGRESS, unleased, not backing off")


# -- a worker's step: it hands the lease back with the next look scheduled -------------

_record_submission = {
    keep: _leased_update(
        _unsent,
        upstream_id=bindparam("upstream_id"),
        provider_state=bindparam("provider_state"),
        checked_at=_now,
        attempts=0,
        **_scheduled,
        **({} if keep else _released),
    )
    for keep in (False, True)
}


async def record_submission(
    tx: Tx,
    lease: Lease,
    *,
    upstream_id: str,
    provider_state: dict[str, Any] | None,
    next_check_at: datetime,
    keep_lease: bool,
    now: datetime,
) -> Result:
    """IN_PROGRESS, held, not sent upstream → IN_PROGRESS, sent (its upstream id kept at
    once, so no retry submits and pays again), next look at `next_check_at`; the lease is
    handed back unless the step goes on to poll (`keep_lease`). `now`: when it was sent."""
    return await _leased(
        tx,
        "record_submission",
        _record_submission[keep_lease],
        lease,
        HELD_UNSENT,
        upstream_id=upstream_id,
        provider_state=provider_state,
        next_check_at=next_check_at,
        callback_read=False,
        now=now,
    )


_schedule_next_check = _leased_update(
    checked_at=_now,
    attempts=0,
    # A provider that says nothing of progress this time leaves what it said before.
    progress=func.coalesce(bindparam("progress", type_=SmallInteger), tasks.c.progress),
    **_scheduled,
    **_released,
)


async def schedule_next_check(
    tx: Tx,
    lease: Lease,
    *,
    next_check_at: datetime,
    callback_read: bool,
    now: datetime,
    progress: int | None = None,
) -> Result:
    """IN_PROGRESS, held → IN_PROGRESS, next look at `next_check_at`: the provider
    answered that the task runs (so its error count starts again), `progress` percent of
    the way where it says so."""
    return await _leased(
        tx,
        "schedule_next_check",
        _schedule_next_check,
        lease,
        next_check_at=next_check_at,
        callback_read=callback_read,
        now=now,
        progress=progress,
    )


_defer = _leased_update(**_scheduled, **_released)


async def defer(
    tx: Tx, lease: Lease, *, next_check_at: datetime, callback_read: bool, now: datetime
) -> Result:
    """IN_PROGRESS, held → IN_PROGRESS, next look at `next_check_at`, no attempt counted:
    the step could not run for a reason that is not the task's (a capacity limit here)."""
    return await _leased(
        tx,
        "defer",
        _defer,
        lease,
        next_check_at=next_check_at,
        callback_read=callback_read,
        now=now,
    )


_retry_later = _leased_update(
    attempts=bindparam("attempts"),
    results_to_copy=bindparam("results_to_copy"),
    **_scheduled,
    **_released,
)


async def retry_later(
    tx: Tx,
    lease: Lease,
    *,
    attempts: int,
    next_check_at: datetime,
    results_to_copy: list[str] | None,
    callback_read: bool,
    now: datetime,
) -> Result:
    """IN_PROGRESS, held → IN_PROGRESS, next try at `next_check_at` (the backoff), with
    `attempts` errors in a row; `results_to_copy`: results known but not yet copied."""
    return await _leased(
        tx,
        "retry_later",
        _retry_later,
        lease,
        attempts=attempts,
        results_to_copy=results_to_copy,
        next_check_at=next_check_at,
        callback_read=callback_read,
        now=now,
    )


_fail_over = _leased_update(
    _unsent,
    provider=bindparam("provider"),
    attempts=bindparam("attempts"),
    routes_tried=bindparam("routes_tried"),
    provider_state=null(),
    results_to_copy=null(),
    **_scheduled,
    **_released,
)


async def fail_over(
    tx: Tx,
    lease: Lease,
    *,
    provider: str,
    attempts: int,
    routes_tried: dict[str, int],
    next_check_at: datetime,
    callback_read: bool,
    now: datetime,
) -> Result:
    """IN_PROGRESS, held, not sent upstream → IN_PROGRESS on the route `provider`, first
    look at `next_check_at`. Only a task no provider has can move: moving a submitted
    one would pay for it twice."""
    return await _leased(
        tx,
        "fail_over",
        _fail_over,
        lease,
        HELD_UNSENT,
        provider=provider,
        attempts=attempts,
        routes_tried=routes_tried,
        next_check_at=next_check_at,
        callback_read=callback_read,
        now=now,
    )


_renew_lease = _leased_update(lease_expires_at=bindparam("lease_until", type_=UTCDateTime))


async def renew_lease(tx: Tx, lease: Lease, *, until: datetime) -> Result:
    """IN_PROGRESS, held → the same, held until `until` (a step that runs long)."""
    return await _leased(tx, "renew_lease", _renew_lease, lease, lease_until=until)


_release = _leased_update(**_released)
_hand_over = _leased_update(
    results_to_copy=bindparam("results_to_copy"),
    next_check_at=_now,
    updated_at=_now,
    **_released,
)


async def hand_over(
    tx: Tx, lease: Lease, *, results_to_copy: list[str] | None, now: datetime
) -> Result:
    """IN_PROGRESS, held → IN_PROGRESS, unleased and due now, for a worker to go on with
    (an API process that runs no worker learnt the task is done upstream; copying the
    results, `results_to_copy` when they are URLs, is a worker's job)."""
    result = await _leased(
        tx, "hand_over", _hand_over, lease, results_to_copy=results_to_copy, now=now
    )
    if isinstance(result, Applied):
        tx.announce(Due.WORK)
    return result


async def release(tx: Tx, lease: Lease) -> Result:
    """IN_PROGRESS, held → IN_PROGRESS, unleased and as due as it was (a step that was
    cancelled on shutdown: another worker takes over at once)."""
    return await _leased(tx, "release", _release, lease)


# -- callbacks --------------------------------------------------------------------------

_store_callback = Query(
    update(tasks)
    .where(_this_task, _unfinished)
    .values(upstream_callback=bindparam("payload"), next_check_at=_now, updated_at=_now)
)


async def store_callback(tx: Tx, task_id: str, *, payload: dict[str, Any], now: datetime) -> Result:
    """IN_PROGRESS, whoever holds it → IN_PROGRESS, due now, with the upstream's
    callback kept for the step that reads it."""
    if await tx.run(_store_callback, {"task_id": task_id, "payload": payload, "now": now}) != 1:
        return Refused(task_id, "store_callback", "IN_PROGRESS")
    tx.announce(Due.WORK)
    return Applied(task_id, IN_PROGRESS)


# -- final states -----------------------------------------------------------------------

_succeed = _leased_update(
    status=TaskStatus.SUCCESS,
    result_urls=bindparam("result_urls"),
    result_sizes=bindparam("result_sizes"),
    results_to_copy=null(),
    finished_at=_now,
    updated_at=_now,
    checked_at=_now,
    **_released,
)


async def succeed(
    tx: Tx,
    lease: Lease,
    task: TaskRow,
    *,
    result_urls: list[str],
    now: datetime,
    result_sizes: list[list[int] | None] | None = None,
) -> Result:
    """IN_PROGRESS, held → SUCCESS with our copies of its results (and the pixel size of
    each image among them); queues its webhook."""
    written = {"result_urls": result_urls, "result_sizes": result_sizes, "now": now}
    if await tx.run(_succeed, {**_lease_params(lease), **written}) != 1:
        return Refused(task.id, "succeed", HELD)
    await _queue_webhook(tx, task, TaskStatus.SUCCESS, now, result_urls=result_urls)
    return Applied(task.id, TaskStatus.SUCCESS)


def _failed(*guards: Any) -> Query:
    return _leased_update(
        *guards,
        status=TaskStatus.FAILED,
        error_message=bindparam("message"),
        refunded=True,
        finished_at=_now,
        updated_at=_now,
        **_released,
    )


_fail = _failed()
_expire = _failed(tasks.c.deadline_at <= _now)


async def fail(tx: Tx, lease: Lease, task: TaskRow, *, message: str, now: datetime) -> Result:
    """IN_PROGRESS, held → FAILED with `message`, refunded; queues its webhook."""
    # Upstream messages are not ours to trust: no NUL (PostgreSQL can't store it), bounded.
    message = message.replace("\x00", "")[:MAX_MESSAGE]
    return await _end_failed(tx, "fail", _fail, lease, task, message, now)


def deadline_message(task: TaskRow) -> str:
    seconds = int((task.deadline_at - task.created_at).total_seconds())
    return f"the task did not finish within {seconds} seconds"


async def expire(tx: Tx, lease: Lease, task: TaskRow, *, now: datetime) -> Result:
    """IN_PROGRESS, held, past its deadline → FAILED, refunded; queues its webhook."""
    return await _end_failed(tx, "expire", _expire, lease, task, deadline_message(task), now)


async def _end_failed(
    tx: Tx, name: str, query: Query, lease: Lease, task: TaskRow, message: str, now: datetime
) -> Result:
    if await tx.run(query, {**_lease_params(lease), "message": message, "now": now}) != 1:
        return Refused(task.id, name, HELD if name == "fail" else f"{HELD}, past its deadline")
    await billing.refund_task(
        tx, account_id=task.account_id, task_id=task.id, amount=task.credits, now=now
    )
    await _queue_webhook(tx, task, TaskStatus.FAILED, now, error_message=message, refunded=True)
    return Applied(task.id, TaskStatus.FAILED, refunded=True)


def _cancel_where(*guards: Any) -> Query:
    return Query(
        update(tasks)
        .where(_this_task, tasks.c.account_id == bindparam("owner_id"), _unfinished, *guards)
        .values(
            status=TaskStatus.FAILED,
            error_message=bindparam("message"),
            refunded=bindparam("refunded"),
            finished_at=_now,
            updated_at=_now,
            **_released,
        )
    )


_cancel = _cancel_where()
# Not sent upstream and nobody sending it right now (a submit in flight holds the lease):
# the one case where no provider can have started paid work.
_cancel_unsent = _cancel_where(_unsent, _unleased)


def kept_message(task: TaskRow) -> str:
    return f"{CANCELLED} after {task.provider} started it; its credits are kept"


async def cancel(tx: Tx, task: TaskRow, *, paid_provider: bool, now: datetime) -> Result:
    """IN_PROGRESS, whoever holds it → FAILED: the holder's next write then matches no
    row. Refunded when no paid provider can have started the task (`paid_provider` is
    False, or it is not sent upstream and nobody is sending it); otherwise the work is
    paid for upstream and the credits are kept. Queues its webhook."""
    params = {"task_id": task.id, "owner_id": task.account_id, "now": now}
    refunded = (
        await tx.run(
            _cancel_unsent if paid_provider else _cancel,
            {**params, "message": CANCELLED, "refunded": True},
        )
        == 1
    )
    message = CANCELLED
    if not refunded:
        message = kept_message(task)
        if await tx.run(_cancel, {**params, "message": message, "refunded": False}) != 1:
            return Refused(task.id, "cancel", "IN_PROGRESS")
    if refunded:
        await billing.refund_task(
            tx, account_id=task.account_id, task_id=task.id, amount=task.credits, now=now
        )
    await _queue_webhook(tx, task, TaskStatus.FAILED, now, error_message=message, refunded=refunded)
    return Applied(task.id, TaskStatus.FAILED, refunded=refunded)


async def _queue_webhook(
    tx: Tx,
    task: TaskRow,
    status: TaskStatus,
    now: datetime,
    *,
    result_urls: list[str] | None = None,
    error_message: str | None = None,
    refunded: bool = False,
) -> None:
    if task.callback_url is None:
        return
    final = TaskView(
        id=task.id,
        status=status,
        request=task.request,
        result_urls=result_urls,
        refunded=refunded,
        credits=task.credits,
        error_message=error_message,
        created_at=task.created_at,
        finished_at=now,
        checked_at=now,
        attempts=0,
        progress=None,
    )
    await webhooks.enqueue(
        tx,
        task_id=task.id,
        account_id=task.account_id,
        url=task.callback_url,
        data=status_data(final),
        now=now,
    )


# -- the gallery flag (not a change of state) --------------------------------------------

_unpublish = Query(
    update(tasks)
    .where(_this_task, tasks.c.account_id == bindparam("owner_id"))
    .values(public=False)
)


async def unpublish(tx: Tx, task_id: str, account_id: str) -> bool:
    """Any state → the same, out of the public gallery; False when the account has no
    such task."""
    return await tx.run(_unpublish, {"task_id": task_id, "owner_id": account_id}) == 1

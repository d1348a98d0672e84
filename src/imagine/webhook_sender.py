"""Delivers the webhook outbox: claims due deliveries with a lease, POSTs them signed,
records every attempt, and retries on the configured schedule.

A 2xx ends a delivery; a 410 Gone stops it; anything else (another status, a timeout, a
refused connection) is retried after the next wait of `IMAGINE_WEBHOOK_RETRY_SCHEDULE`
(with 10% jitter) until the schedule runs out. Redirects are not followed. The address is
checked like every outbound fetch (public addresses only, unless allowed), and the
connection goes to the checked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from datetime import timedelta

import aiohttp

from imagine.clock import utc_now
from imagine.metrics import WEBHOOK_DELIVERIES
from imagine.netguard import CheckedResolver, RefusedAddress, known_refusal, target, url_problem
from imagine.services.webhooks import secret_of
from imagine.states import DeliveryStatus
from imagine.store import webhooks as repo
from imagine.store.db import Database
from imagine.store.wakeups import Due
from imagine.store.webhooks import AttemptRow, DeliveryRow
from imagine.webhooks import signed_headers

logger = logging.getLogger("imagine.webhooks")

AT_ONCE = 16
LEASE_MARGIN = 60.0
_OUTCOMES = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.PENDING: "retry",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.GONE: "gone",
}


class WebhookSender:
    def __init__(
        self,
        db: Database,
        *,
        schedule: tuple[float, ...],
        timeout: float,
        allow_private: bool,
        user_agent: str,
        poll_interval: float,
    ) -> None:
        self.id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._db = db
        self._schedule = schedule
        self._timeout = timeout
        self._allow_private = allow_private
        self._user_agent = user_agent
        self._poll_interval = poll_interval
        self._session: aiohttp.ClientSession | None = None
        self._wake = db.wakeups.subscribe(Due.DELIVERY)
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # A lease outlives the longest attempt, so no other sender posts it meanwhile.
        self._lease = timedelta(seconds=timeout + LEASE_MARGIN)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(
                limit=AT_ONCE, resolver=CheckedResolver(allow_private=self._allow_private)
            ),
        )
        self._loop_task = asyncio.create_task(self.run(), name="imagine-webhooks")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        # A pipeline, not batches: a receiver that keeps its connection open until the
        # timeout holds one slot, not everyone's deliveries.
        while not self._stopping:
            self._wake.clear()
            free = AT_ONCE - len(self._running)
            due: list[DeliveryRow] = []
            if free > 0:
                try:
                    due = await self._claim(free)
                except Exception:
                    logger.exception("claiming webhook deliveries failed; trying again")
            for delivery in due:
                sending = asyncio.create_task(self._deliver_safely(delivery))
                self._running.add(sending)
                sending.add_done_callback(self._on_done)
            if due and len(due) == free:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        if self._running:
            await asyncio.wait(self._running, timeout=self._timeout + 1)

    def _on_done(self, sending: asyncio.Task[None]) -> None:
        self._running.discard(sending)
        self._wake.set()

    async def _claim(self, limit: int) -> list[DeliveryRow]:
        now = utc_now()
        return await self._db.write(
            lambda tx: repo.claim_due(
                tx, worker_id=self.id, now=now, lease_until=now + self._lease, limit=limit
            )
        )

    async def _deliver_safely(self, delivery: DeliveryRow) -> None:
        try:
            await self._deliver(delivery)
        except Exception:
            # The lease runs out and the delivery is tried again; the sender goes on.
            logger.exception(
                "webhook %s: delivering failed unexpectedly",
                delivery.id,
                extra={"task_id": delivery.task_id},
            )

    async def _deliver(self, delivery: DeliveryRow) -> None:
        attempted_at = utc_now()
        started = time.perf_counter()
        status_code, error, final = await self._post(delivery)
        duration_ms = int((time.perf_counter() - started) * 1000)
        if status_code is not None and 200 <= status_code < 300:
            status = DeliveryStatus.DELIVERED
        elif status_code == 410:
            status = DeliveryStatus.GONE
        elif final or delivery.attempts >= len(self._schedule):
            status = DeliveryStatus.FAILED
        else:
            status = DeliveryStatus.PENDING
        wait = self._schedule[min(delivery.attempts, len(self._schedule) - 1)]
        next_at = attempted_at + timedelta(seconds=wait * random.uniform(0.9, 1.1))
        attempt = AttemptRow(delivery.id, attempted_at, status_code, error, duration_ms)
        recorded = await self._db.write(
            lambda tx: repo.record_attempt(
                tx, delivery, self.id, attempt=attempt, status=status, next_attempt_at=next_at
            )
        )
        if recorded:
            WEBHOOK_DELIVERIES.labels(_OUTCOMES.get(status, str(status))).inc()
        if status is not DeliveryStatus.DELIVERED:
            logger.info(
                "webhook %s for task %s: %s (%s)",
                delivery.id,
                delivery.task_id,
                status,
                status_code or error,
                extra={"task_id": delivery.task_id},
            )

    async def _post(self, delivery: DeliveryRow) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error, whether retrying is pointless)."""
        url = delivery.url
        problem = url_problem(url)
        if problem is not None:
            return None, f"the URL {problem}", True
        refusal = known_refusal(url, allow_private=self._allow_private)
        if refusal is not None:
            return None, f"the URL {refusal}", True
        try:
            secret = await secret_of(self._db, delivery.account_id)
        except Exception:
            logger.exception(
                "webhook %s: reading the signing secret failed",
                delivery.id,
                extra={"task_id": delivery.task_id},
            )
            return None, "internal error while signing", False
        body = delivery.payload.encode()
        headers = {
            **signed_headers(secret, delivery.id, body, time.time()),
            "content-type": "application/json",
            "user-agent": self._user_agent,
        }
        assert self._session is not None
        try:
            async with self._session.post(
                target(url).url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(64 * 1024)  # what the receiver said is not kept
                return response.status, None, False
        except RefusedAddress as exc:
            return None, str(exc)[:500], True
        except TimeoutError:
            return None, f"no answer within {self._timeout:g} s", False
        except aiohttp.ClientError as exc:
            return None, f"could not connect ({type(exc).__name__})", False
        except Exception as exc:  # e.g. a host name that can't be encoded: never better
            return None, f"could not be sent ({type(exc).__name__})", True

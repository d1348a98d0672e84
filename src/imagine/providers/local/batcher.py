"""Gathers the tasks waiting for the GPU into batched pipeline calls.

The worker advances many tasks at once (IMAGINE_WORKER_CONCURRENCY); each local task's
step puts its `Work` here and awaits its future. One thread per process owns the GPU:
it takes the oldest waiting task and every other waiting task with the same key (model,
size, frames) up to the batch size, makes them in one pipeline call (torch releases
the GIL, so the event loop keeps serving meanwhile), and resolves each task's future on
its event loop. When the GPU was idle it first waits `batch_wait` seconds from the
oldest task's arrival, so that tasks claimed together share a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imagine.providers.local.engine import Broken, Made, Work

logger = logging.getLogger("imagine.providers.local")


@dataclass(eq=False)
class Entry:
    """One task in this process: queued, on the GPU, or made and not yet collected."""

    work: Work
    future: asyncio.Future[Made]
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    def resolve(self, made: Made) -> None:
        self.finished_at = time.monotonic()

        def settle() -> None:
            if not self.future.done():
                self.future.set_result(made)

        with contextlib.suppress(RuntimeError):  # its loop is gone: nobody waits any more
            self.loop.call_soon_threadsafe(settle)


class Batcher:
    def __init__(
        self,
        run: Callable[[Sequence[Work]], list[Made]],
        *,
        batch_size: int,
        batch_wait: float,
    ) -> None:
        self._run = run
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._waiting: list[Entry] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, entry: Entry) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the local provider is closed")
            self._waiting.append(entry)
            self._cond.notify()
            if self._thread is None:
                # A daemon: a process stopping doesn't wait for a long video to finish;
                # its task was handed back and is made again elsewhere.
                self._thread = threading.Thread(
                    target=self._serve, name="imagine-local-gpu", daemon=True
                )
                self._thread.start()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def close(self) -> list[Entry]:
        """Stop taking batches; returns the entries that never reached the GPU."""
        with self._cond:
            self._closed = True
            left, self._waiting = self._waiting, []
            self._cond.notify_all()
        return left

    def _serve(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            try:
                made = self._run([entry.work for entry in batch])
            except BaseException as exc:  # the thread must outlive any one batch
                logger.exception("local provider: a batch failed unexpectedly")
                made = [Broken(f"the local provider failed: {type(exc).__name__}")] * len(batch)
            for entry, result in zip(batch, made, strict=True):
                entry.resolve(result)

    def _next(self) -> list[Entry] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._waiting[0]
            ready_at = first.queued_at + self._batch_wait
            while True:
                same = [e for e in self._waiting if e.work.key == first.work.key]
                same = same[: self._batch_size]
                left = ready_at - time.monotonic()
                if len(same) >= self._batch_size or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            for entry in same:
                self._waiting.remove(entry)
            return same

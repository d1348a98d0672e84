"""The local provider: generation on this machine's GPU with diffusers.

A task's whole generation is one worker step, so the worker's lease (renewed by its
heartbeat while the step runs) keeps every other worker off the task:

- `submit` picks the task's seed, works out its pipeline arguments, queues it for the
  GPU and answers at once with `poll_after=0`, so the worker stores the seed (and the
  rest of the plan) in the task's provider_state and, keeping the lease, polls at once;
- `poll` waits for the batch the task went into and hands its PNG or MP4 to the worker.

Nothing acknowledged is lost when a worker process dies: its in-memory queue and results
die with it, its leases expire, and the task is claimed again. A poll that finds no run of
the task in its process (a restart, or a step that outlived its 10-minute call budget and
was taken over) queues it again with the seed its provider_state recorded, so it is
made again as it would have been. A model that fails, runs out of memory or can't be
loaded fails the task, which the worker refunds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from PIL import Image, ImageOps

from imagine import catalog
from imagine.config import SettingsError, load_section
from imagine.providers import media
from imagine.providers.base import (
    Artifact,
    Failed,
    Health,
    Job,
    Outcome,
    ProviderContext,
    ProviderError,
    SourceTask,
    Submitted,
    Succeeded,
    source_image_size,
    source_image_url,
    source_index_problem,
)
from imagine.providers.local import shapes
from imagine.providers.local.batcher import Batcher, Entry
from imagine.providers.local.engine import (
    SECONDS,
    Broken,
    Engine,
    Made,
    Pictures,
    Unloadable,
    Work,
    missing_packages,
)
from imagine.providers.local.settings import SETTING_OF_MODEL, LocalSettings

NAME = "local"
logger = logging.getLogger("imagine.providers.local")

RESULT_TTL = 600.0
"""Seconds a made result waits for its poll before it is dropped (its step was cut off,
and the task will be made again if it is still wanted)."""
DEFER_SECONDS = 2.0
"""When this process holds IMAGINE_LOCAL_MAX_QUEUED tasks, a new one goes back to the
queue for about this long (no try counted), where another worker may take it."""
ELSEWHERE_SECONDS = 30.0
"""A process that can't run models (device none, or no `gpu` extra) puts local tasks back
for this long, for a GPU worker to take."""


class LocalProvider:
    name = NAME
    engine: Literal["preview", "ai"] = "ai"
    polls_remotely = False
    trusted_hosts: frozenset[str] = frozenset()

    def __init__(self, settings: LocalSettings, context: ProviderContext) -> None:
        self._settings = settings
        self._context = context
        self._dirs = settings.model_dirs()
        self.models = frozenset(self._dirs)
        self._entries: dict[str, Entry] = {}
        self._engine: Engine | None = None
        self._batcher: Batcher | None = None
        self._folders: dict[str, shapes.Folder] = {}
        self._warned = False

    def refusal(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> str | None:
        if model == catalog.UPSCALE:
            size = source_image_size(given, source)
            factor = shapes.UPSCALE_FACTOR
            if size is not None and max(size) * factor > media.MAX_OUTPUT_SIDE:
                return (
                    f"input.task_id: the upscale of its {size[0]}x{size[1]} image would be "
                    f"{size[0] * factor}x{size[1] * factor}; the limit is "
                    f"{media.MAX_OUTPUT_SIDE} px on a side"
                )
        return source_index_problem(given, source)

    # -- the two steps ------------------------------------------------------------------

    async def submit(self, job: Job) -> Submitted:
        entry = self._entries.get(job.task_id)
        if entry is None:
            entry = await self._queue(job, secrets.randbelow(2**32))
        return Submitted(upstream_id=f"local-{job.task_id}", poll_after=0, state=_plan(entry.work))

    async def poll(self, job: Job) -> Outcome:
        entry = self._entries.get(job.task_id)
        if entry is None:
            seed = job.state.get("seed")
            if not isinstance(seed, int):
                seed = secrets.randbelow(2**32)
            entry = await self._queue(job, seed)
            logger.info(
                "task %s: not made in this process; making it again with seed %d",
                job.task_id,
                seed,
            )
        # Shielded: a step cut off by its time budget leaves the task in its batch, and
        # the next poll of this process collects it.
        made = await asyncio.shield(entry.future)
        try:
            return await self._outcome(entry.work, made)
        finally:
            self._entries.pop(job.task_id, None)

    async def _outcome(self, work: Work, made: Made) -> Outcome:
        if isinstance(made, Unloadable):
            raise ProviderError(
                f"this server's {work.model.removeprefix('grok-imagine/')} model could not "
                "be loaded; the operator has been alerted, try again later",
                retryable=False,
                operator=True,
            )
        if isinstance(made, Broken):
            return Failed(made.message)
        started = time.perf_counter()
        try:
            artifact = await asyncio.to_thread(_encode, work, made)
        except media.MediaError as exc:
            return Failed(str(exc))
        SECONDS.labels(work.model, "encode").observe(time.perf_counter() - started)
        return Succeeded([artifact])

    # -- queueing -----------------------------------------------------------------------

    async def _queue(self, job: Job, seed: int) -> Entry:
        self._runnable_here()
        self._forget_stale()
        limit = self._settings.max_queued
        if limit and sum(not e.future.done() for e in self._entries.values()) >= limit:
            raise ProviderError(
                "the local GPU of this worker is busy",
                retryable=True,
                deferred=True,
                retry_after=DEFER_SECONDS,
            )
        work = await self._work(job, seed)
        existing = self._entries.get(job.task_id)
        if existing is not None:  # queued by a concurrent step while we read the source
            return existing
        loop = asyncio.get_running_loop()
        entry = Entry(work, loop.create_future(), loop)
        self._entries[job.task_id] = entry
        self._gpu().put(entry)
        return entry

    def _runnable_here(self) -> None:
        """Defer the task when this process can't run models: a worker of the fleet that
        can will take it (and past its deadline it fails with a refund)."""
        why = None
        if self._settings.device == "none":
            why = "IMAGINE_LOCAL_DEVICE=none"
        else:
            missing = missing_packages()
            if missing:
                why = f"{', '.join(missing)} not installed (the gpu extra)"
        if why is None:
            return
        if not self._warned:
            self._warned = True
            logger.warning("local tasks are left to other workers here: %s", why)
        raise ProviderError(
            f"this worker can't run local models ({why}); waiting for one that can",
            retryable=True,
            deferred=True,
            retry_after=ELSEWHERE_SECONDS,
        )

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for task_id, entry in list(self._entries.items()):
            if entry.finished_at is not None and now - entry.finished_at > RESULT_TTL:
                del self._entries[task_id]

    def _gpu(self) -> Batcher:
        if self._batcher is None:
            self._engine = Engine(self._settings, self._dirs)
            self._batcher = Batcher(
                self._engine.run,
                batch_size=self._settings.batch_size,
                batch_wait=self._settings.batch_wait,
            )
        return self._batcher

    def _folder(self, model: str) -> shapes.Folder:
        found = self._folders.get(model)
        if found is None:
            try:
                found = shapes.describe(model, self._dirs[model])
            except shapes.UnsupportedModel as exc:
                logger.error("%s: %s", SETTING_OF_MODEL[model], exc)
                raise ProviderError(
                    f"this server's {model.removeprefix('grok-imagine/')} model is not "
                    "usable; the operator has been alerted, try again later",
                    retryable=False,
                    operator=True,
                ) from None
            self._folders[model] = found
        return found

    async def _work(self, job: Job, seed: int) -> Work:
        """The task's pipeline arguments: sizes, frames, its source image."""
        folder = self._folder(job.model)
        family = folder.family
        given = job.input
        prompt = str(given.get("prompt") or "")
        base = Work(job.task_id, job.model, family, prompt, seed, 0, 0)
        if job.model == catalog.TEXT_TO_IMAGE:
            ratio = str(given.get("aspect_ratio") or shapes.DEFAULT_IMAGE_RATIO)
            width, height = shapes.image_size(ratio, self._settings.image_side, family.multiple)
            return replace(base, width=width, height=height)
        short_side = self._settings.video_sides[
            str(given.get("resolution") or shapes.DEFAULT_RESOLUTION)
        ]
        seconds = float(given.get("duration") or shapes.DEFAULT_SECONDS)
        count, fps = shapes.frames(
            seconds,
            self._settings.fps or family.fps,
            family.frame_step,
            self._settings.max_frames or folder.max_frames,
        )
        if job.model == catalog.TEXT_TO_VIDEO:
            ratio = str(given.get("aspect_ratio") or shapes.DEFAULT_VIDEO_RATIO)
            rw, rh = shapes.ratio(ratio)
            width, height = shapes.video_size(rw, rh, short_side, family.multiple)
            return replace(base, width=width, height=height, frames=count, fps=fps)
        source = await self._source(job)
        if job.model == catalog.IMAGE_TO_VIDEO:
            width, height = shapes.video_size(*source.size, short_side, family.multiple)
            image = await asyncio.to_thread(
                ImageOps.fit, source, (width, height), Image.Resampling.LANCZOS
            )
            return replace(base, width=width, height=height, frames=count, fps=fps, image=image)
        target = (source.width * shapes.UPSCALE_FACTOR, source.height * shapes.UPSCALE_FACTOR)
        if max(target) > media.MAX_OUTPUT_SIDE:
            raise ProviderError(
                f"the upscaled image would be {target[0]}x{target[1]}; the limit is "
                f"{media.MAX_OUTPUT_SIDE} px on a side",
                retryable=False,
            )
        width = shapes.round_to(source.width, family.multiple)
        height = shapes.round_to(source.height, family.multiple)
        image = source
        if (width, height) != source.size:
            image = await asyncio.to_thread(
                source.resize, (width, height), Image.Resampling.LANCZOS
            )
        return replace(base, width=width, height=height, image=image, target=target)

    async def _source(self, job: Job) -> Image.Image:
        url = source_image_url(job.input, job.source)
        if url is None:
            raise ProviderError("the task has no source image", retryable=False)
        data = await self._context.load_source(url, job.account_id)
        try:
            return await asyncio.to_thread(_decode, data)
        except media.MediaError as exc:
            raise ProviderError(str(exc), retryable=False) from None

    # -- the operator's view ------------------------------------------------------------

    async def check(self) -> Health:
        missing = missing_packages()
        if self._settings.device == "none":
            return Health(
                ok=True,
                reachable=True,
                detail="device none: this process leaves local tasks to GPU workers",
            )
        if missing:
            return Health(
                ok=False,
                reachable=False,
                detail=f"{', '.join(missing)} not installed here (imagine's gpu extra)",
            )
        problems = []
        for model in sorted(self._dirs):
            try:
                shapes.describe(model, self._dirs[model])
            except shapes.UnsupportedModel as exc:
                problems.append(f"{SETTING_OF_MODEL[model]}: {exc}")
        if problems:
            return Health(ok=False, reachable=True, detail="; ".join(problems))
        resident = self._engine.resident() if self._engine is not None else []
        kinds = ", ".join(model.removeprefix("grok-imagine/") for model in sorted(self._dirs))
        loaded = ", ".join(m.removeprefix("grok-imagine/") for m in resident) or "none yet"
        return Health(
            ok=True,
            reachable=True,
            detail=f"device {self._settings.device}; models {kinds}; loaded: {loaded}",
        )

    async def aclose(self) -> None:
        if self._batcher is not None:
            for entry in self._batcher.close():
                if not entry.future.done():
                    entry.future.set_result(Broken("the worker stopped"))
        if self._engine is not None:
            self._engine.close()


def create(context: ProviderContext) -> LocalProvider:
    settings = load_section(LocalSettings)
    if not settings.model_dirs():
        raise SettingsError(
            "invalid setting IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL: a route uses local, so give "
            "at least one model folder (IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL, "
            "IMAGINE_LOCAL_UPSCALE_MODEL, IMAGINE_LOCAL_IMAGE_TO_VIDEO_MODEL, "
            "IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL)"
        )
    return LocalProvider(settings, context)


def _plan(work: Work) -> dict[str, Any]:
    """What provider_state records: enough to make the same result again."""
    plan: dict[str, Any] = {
        "seed": work.seed,
        "pipeline": work.family.pipeline,
        "width": work.width,
        "height": work.height,
    }
    if work.frames:
        plan.update(frames=work.frames, fps=work.fps)
    return plan


def _decode(data: bytes) -> Image.Image:
    return media._flatten(media._decode_image(data))


def _encode(work: Work, made: Pictures) -> Artifact:
    if work.frames:
        frames = [frame.convert("RGB") for frame in made.frames]
        if not frames:
            raise media.MediaError("the model made no frames")
        size = frames[0].size
        if any(frame.size != size for frame in frames) or size[0] % 2 or size[1] % 2:
            raise media.MediaError(f"the model made frames of a size H.264 can't take: {size}")
        return Artifact(media._encode_mp4(frames, size, made.fps), "video/mp4")
    image = made.frames[0].convert("RGB")
    if work.target is not None and image.size != work.target:
        image = image.resize(work.target, Image.Resampling.LANCZOS)
    return Artifact(media._png(image), "image/png")

"""The offline preview engine: real files, no AI model.

It is honest about what it is (listed as engine `preview`): images drawn from the
prompt, short MP4s, a real resampling upscale. It behaves like an upstream provider —
submit, then poll until ready after `delay` seconds — so the whole server, its tests and
its benchmarks run anywhere without credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from imagine import catalog
from imagine.clock import utc_now
from imagine.providers import media
from imagine.providers.base import (
    Artifact,
    Failed,
    Health,
    Job,
    Outcome,
    Pending,
    ProviderContext,
    ProviderError,
    SourceLoader,
    SourceTask,
    Submitted,
    Succeeded,
    source_image_size,
    source_image_url,
    source_index_problem,
)

DEFAULT_SECONDS = 6
"""The API's default `duration` (docs: kie.ai's and xAI's); the preview honours any."""
PREVIEW_SCALE = {"480p": 240, "720p": 360}
"""A preview video's short side per requested `resolution`: half of it, so a preview stays
cheap to make (10 s at 360p renders in about a second on one core); the aspect ratio and
the length are the ones asked for."""
DEFAULT_RESOLUTION = "480p"
UPSCALE_FACTOR = 2
PROGRESS_UPDATES = 10
"""How many times the engine reports progress over its delay (each is a worker write),
at most every PROGRESS_SPACING seconds."""
PROGRESS_SPACING = 0.5


class PreviewProvider:
    name = "preview"
    engine: Literal["preview", "ai"] = "preview"
    polls_remotely = False
    models = frozenset(catalog.MODELS)
    trusted_hosts: frozenset[str] = frozenset()

    def __init__(self, *, delay: float, load_source: SourceLoader) -> None:
        self._delay = delay
        self._load_source = load_source

    def refusal(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> str | None:
        if model == catalog.UPSCALE:
            size = source_image_size(given, source)
            if size is not None and max(size) * UPSCALE_FACTOR > media.MAX_OUTPUT_SIDE:
                width, height = (side * UPSCALE_FACTOR for side in size)
                return (
                    f"input.task_id: the upscale of its {size[0]}x{size[1]} image would be "
                    f"{width}x{height}; the limit is {media.MAX_OUTPUT_SIDE} px on a side"
                )
        return source_index_problem(given, source)

    async def submit(self, job: Job) -> Submitted:
        ready_at = utc_now() + timedelta(seconds=self._delay)
        return Submitted(
            upstream_id=f"preview-{job.task_id}",
            poll_after=self._delay,
            state={"ready_at": ready_at.isoformat()},
        )

    async def poll(self, job: Job) -> Outcome:
        ready_at = datetime.fromisoformat(str(job.state.get("ready_at")))
        remaining = (ready_at - utc_now()).total_seconds()
        if remaining > 0:
            done = 1 - remaining / self._delay if self._delay > 0 else 0.0
            return Pending(
                poll_after=min(remaining, max(PROGRESS_SPACING, self._delay / PROGRESS_UPDATES)),
                progress=max(0, min(99, int(done * 100))),
            )
        try:
            artifact = await self._render(job)
        except media.MediaError as exc:
            return Failed(str(exc))
        return Succeeded([artifact])

    async def check(self) -> Health:
        return Health(ok=True, reachable=True, detail="offline engine; always available")

    async def _render(self, job: Job) -> Artifact:
        prompt = str(job.input.get("prompt") or "")
        if job.model == catalog.TEXT_TO_IMAGE:
            ratio = str(job.input.get("aspect_ratio") or "1:1")
            data = await asyncio.to_thread(media.render_image, prompt, aspect_ratio=ratio)
            return Artifact(data, "image/png")
        seconds, short_side = _video_shape(job.input)
        if job.model == catalog.TEXT_TO_VIDEO:
            ratio = str(job.input.get("aspect_ratio") or "2:3")
            data = await asyncio.to_thread(
                media.render_video,
                prompt,
                seconds=seconds,
                aspect_ratio=ratio,
                long_side=_long_side(ratio, short_side),
            )
            return Artifact(data, "video/mp4")
        source = await self._load_source(self._source_url(job), job.account_id)
        if job.model == catalog.IMAGE_TO_VIDEO:
            data = await asyncio.to_thread(
                media.animate_image, source, seconds=seconds, short_side=short_side
            )
            return Artifact(data, "video/mp4")
        if job.model == catalog.UPSCALE:
            data = await asyncio.to_thread(media.upscale_image, source, factor=UPSCALE_FACTOR)
            return Artifact(data, "image/png")
        raise ProviderError(f"the preview engine has no model {job.model}", retryable=False)

    @staticmethod
    def _source_url(job: Job) -> str:
        url = source_image_url(job.input, job.source)
        if url is None:
            raise ProviderError("the task has no source image", retryable=False)
        return url

    async def aclose(self) -> None:
        return None


def create(context: ProviderContext) -> PreviewProvider:
    return PreviewProvider(delay=context.settings.preview_delay, load_source=context.load_source)


def _video_shape(given: Mapping[str, Any]) -> tuple[float, int]:
    """The length (as asked) and the short side (PREVIEW_SCALE) of a preview video."""
    seconds = float(given.get("duration") or DEFAULT_SECONDS)
    return seconds, PREVIEW_SCALE[str(given.get("resolution") or DEFAULT_RESOLUTION)]


def _long_side(aspect_ratio: str, short_side: int) -> int:
    """The long side of a frame of `aspect_ratio` ("16:9") whose short side is `short_side`."""
    width, height = (int(part) for part in aspect_ratio.split(":"))
    return round(short_side * max(width, height) / min(width, height))

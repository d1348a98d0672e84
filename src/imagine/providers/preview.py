"""The offline preview engine: real files, no AI model.

It is honest about what it is (listed as engine `preview`): images drawn from the
prompt, short MP4s, a real resampling upscale. It behaves like an upstream provider —
submit, then poll until ready after `delay` seconds — so the whole server, its tests and
its benchmarks run anywhere without credentials.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Literal

from imagine import catalog
from imagine.clock import utc_now
from imagine.providers import media
from imagine.providers.base import (
    Artifact,
    Failed,
    Job,
    Outcome,
    Pending,
    ProviderError,
    SourceLoader,
    Submitted,
    Succeeded,
)

VIDEO_SECONDS = 3.0


class PreviewProvider:
    name = "preview"
    engine: Literal["preview", "ai"] = "preview"
    models = frozenset(catalog.MODELS)

    def __init__(self, *, delay: float, load_source: SourceLoader) -> None:
        self._delay = delay
        self._load_source = load_source

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
            return Pending(poll_after=remaining)
        try:
            artifact = await self._render(job)
        except media.MediaError as exc:
            return Failed(str(exc))
        return Succeeded([artifact])

    async def _render(self, job: Job) -> Artifact:
        prompt = str(job.input.get("prompt") or "")
        if job.model == catalog.TEXT_TO_IMAGE:
            data = await asyncio.to_thread(media.render_image, prompt)
            return Artifact(data, "image/png")
        if job.model == catalog.TEXT_TO_VIDEO:
            data = await asyncio.to_thread(media.render_video, prompt, seconds=VIDEO_SECONDS)
            return Artifact(data, "video/mp4")
        source = await self._load_source(self._source_url(job))
        if job.model == catalog.IMAGE_TO_VIDEO:
            data = await asyncio.to_thread(media.animate_image, source, seconds=VIDEO_SECONDS)
            return Artifact(data, "video/mp4")
        if job.model == catalog.UPSCALE:
            data = await asyncio.to_thread(media.upscale_image, source)
            return Artifact(data, "image/png")
        raise ProviderError(f"the preview engine has no model {job.model}", retryable=False)

    @staticmethod
    def _source_url(job: Job) -> str:
        if job.source is not None and job.source.result_urls:
            return job.source.result_urls[0]
        urls = job.input.get("image_urls") or []
        if not urls:
            raise ProviderError("the task has no source image", retryable=False)
        return str(urls[0])

    async def aclose(self) -> None:
        return None

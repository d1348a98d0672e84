"""xAI's API: images from `/v1/images/generations` (synchronous), videos from
`/v1/videos/generations` then `GET /v1/videos/{request_id}` (pending, done, failed,
expired). xAI has no upscale model and no callbacks; routing never sends it upscales.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagine import catalog
from imagine.config import Rate, load_section
from imagine.providers.base import (
    Artifact,
    Failed,
    Health,
    Job,
    Outcome,
    Pending,
    ProviderContext,
    ProviderError,
    Remote,
    SourceTask,
    Submitted,
    Succeeded,
    percent,
    source_image_url,
    source_index_problem,
)
from imagine.providers.media import sniff_content_type
from imagine.providers.upstream import (
    ACCOUNT,
    CREATE,
    POLL,
    Answer,
    classify,
    json_object,
    probe,
    required_key,
    retry_after,
    upstream_client,
)

NAME = "xai"
IN_FLIGHT = ("pending", "queued", "processing")
# The API's documented defaults, so a task means the same whichever provider runs it.
DEFAULT_ASPECT = {catalog.TEXT_TO_IMAGE: "1:1", catalog.TEXT_TO_VIDEO: "2:3"}
DEFAULT_DURATION = 6
DEFAULT_RESOLUTION = "480p"


class XaiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGINE_XAI_", extra="ignore")

    api_key: SecretStr | None = Field(default=None, description="xAI API key.")
    base_url: str = Field(default="https://api.x.ai", description="xAI API base URL.")
    image_model: str = Field(default="grok-imagine-image", description="xAI image model.")
    video_model: str = Field(default="grok-imagine-video", description="xAI video model.")
    poll_rate: Rate = Field(default=(10, 1.0), description="Video status calls allowed.")
    create_rate: Rate = Field(default=(60, 60.0), description="Generation calls allowed.")
    timeout: float = Field(
        default=120.0, gt=0, le=600, description="Seconds per xAI call (images are synchronous)."
    )


class XaiProvider:
    name = NAME
    engine: Literal["preview", "ai"] = "ai"
    polls_remotely = True
    models = frozenset({catalog.TEXT_TO_IMAGE, catalog.TEXT_TO_VIDEO, catalog.IMAGE_TO_VIDEO})

    def __init__(self, settings: XaiSettings, api_key: str, context: ProviderContext) -> None:
        self._settings = settings
        self._context = context
        self._client = upstream_client(
            NAME, settings, api_key, context.user_agent, redis_url=context.settings.redis_url
        )
        self.trusted_hosts = self._client.trusted_hosts

    def refusal(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> str | None:
        # xAI animates our copy of the source image, so the index must name one we have.
        return source_index_problem(given, source)

    async def submit(self, job: Job) -> Submitted:
        if job.model == catalog.TEXT_TO_IMAGE:
            return await self._image(job)
        body: dict[str, Any] = {
            "model": self._settings.video_model,
            "prompt": str(job.input.get("prompt") or ""),
            "duration": int(job.input.get("duration") or DEFAULT_DURATION),
            "resolution": str(job.input.get("resolution") or DEFAULT_RESOLUTION),
        }
        if job.model == catalog.IMAGE_TO_VIDEO:
            body["image"] = {"url": await self._image_reference(job)}
        else:
            body["aspect_ratio"] = str(job.input.get("aspect_ratio") or DEFAULT_ASPECT[job.model])
        response = await self._client.call(CREATE, "POST", "/v1/videos/generations", json=body)
        answer = _answer(response)
        request_id = answer.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("xAI answered a video request without a request_id", retryable=True)
        state = {"submitted_at": time.time()}
        return Submitted(upstream_id=request_id, poll_after=_next_poll(state), state=state)

    async def _image(self, job: Job) -> Submitted:
        body = {
            "model": self._settings.image_model,
            "prompt": str(job.input.get("prompt") or ""),
            "n": 1,
            "response_format": "url",
            "aspect_ratio": str(job.input.get("aspect_ratio") or DEFAULT_ASPECT[job.model]),
        }
        response = await self._client.call(CREATE, "POST", "/v1/images/generations", json=body)
        answer = _answer(response)
        upstream_id = f"xai-image-{job.task_id}"
        if answer.get("block_reason"):
            reason = str(answer["block_reason"])[:300]
            return Submitted(
                upstream_id, 0, {}, Failed(f"the provider blocked this prompt: {reason}")
            )
        items = answer.get("data")
        if not isinstance(items, list) or not items:
            raise ProviderError("xAI answered an image request without images", retryable=True)
        results: list[Artifact | Remote] = []
        for item in items:
            results.append(_image_result(item))
        urls = [result.url for result in results if isinstance(result, Remote)]
        # URLs are kept so that a restart before they are mirrored still finds them;
        # inline images can't be (they would bloat the row) and live only in this step.
        state = {"result_urls": urls, "complete": len(urls) == len(results)}
        return Submitted(upstream_id, 0, state, Succeeded(results))

    async def _image_reference(self, job: Job) -> str:
        """The source image as xAI takes it: a public URL as is, our own copy inline."""
        url = source_image_url(job.input, job.source)
        if url is None:
            raise ProviderError("the task has no source image", retryable=False)
        if not self._context.is_own_url(url):
            return url
        data = await self._context.load_source(url, job.account_id)
        kind = sniff_content_type(data) or "image/png"
        return f"data:{kind};base64,{base64.b64encode(data).decode()}"

    async def poll(self, job: Job) -> Outcome:
        if job.model == catalog.TEXT_TO_IMAGE:
            urls = job.state.get("result_urls") or []
            if job.state.get("complete") and urls:
                return Succeeded([Remote(str(url)) for url in urls])
            return Failed("the image was lost in a restart before it was stored; submit it again")
        path = f"/v1/videos/{quote(str(job.upstream_id), safe='')}"
        response = await self._client.call(POLL, "GET", path)
        answer = _answer(response, accept=(200, 202))
        status = answer.get("status")
        if status in IN_FLIGHT or (response.status_code == 202 and status is None):
            return Pending(_next_poll(job.state), progress=percent(answer.get("progress")))
        if status == "done":
            video = answer.get("video")
            url = video.get("url") if isinstance(video, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ProviderError("xAI reported a finished video without its URL", retryable=True)
            return Succeeded([Remote(url)])
        if status == "failed":
            error = answer.get("error")
            reason = error.get("message") if isinstance(error, dict) else None
            return Failed(f"the provider could not generate this: {reason or 'no reason given'}")
        if status == "expired":
            return Failed("the provider's request expired before the video was ready")
        raise ProviderError(f"xAI answered with an unknown status {status!r}", retryable=True)

    async def check(self) -> Health:
        async def models() -> None:
            _answer(await self._client.call(ACCOUNT, "GET", "/v1/models"))

        return await probe(models)

    async def aclose(self) -> None:
        await self._client.aclose()


def create(context: ProviderContext) -> XaiProvider:
    settings = load_section(XaiSettings)
    return XaiProvider(settings, required_key(settings.api_key, NAME), context)


def _answer(response: Answer, accept: tuple[int, ...] = (200,)) -> dict[str, Any]:
    """The JSON body of an accepted answer; errors raise per the shared policy."""
    body = json_object(response)
    if response.status_code not in accept:
        detail = _detail(body)
        code = response.status_code
        if code == 400 and "api key" in detail.lower():
            code = 401  # xAI answers a bad key with 400; it is the operator's to fix
        raise classify(NAME, code, detail, retry_after=retry_after(response))
    if body is None:
        raise ProviderError("xAI answered with something that is not JSON", retryable=True)
    return body


def _detail(body: dict[str, Any] | None) -> str:
    """xAI's error text: `{"error": "..."}` or the OpenAI shape `{"error": {"message"}}`."""
    if body is None:
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or body.get("message") or "")[:300]


def _image_result(item: Any) -> Artifact | Remote:
    if isinstance(item, dict):
        url = item.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return Remote(url)
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                data = b""
            kind = sniff_content_type(data)
            if kind is not None and kind.startswith("image/"):
                return Artifact(data, kind)
    raise ProviderError("xAI answered an image that is neither a URL nor an image", retryable=True)


def _next_poll(state: Mapping[str, Any]) -> float:
    """Videos take tens of seconds: every 2-3 s at first, then every 5-10 s."""
    age = time.time() - float(state.get("submitted_at", time.time()))
    return random.uniform(2, 3) if age < 30 else random.uniform(5, 10)

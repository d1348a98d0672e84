"""kie.ai's market jobs API: createTask, recordInfo polling, signed callbacks.

Protocol facts (docs.kie.ai, see docs/providers.md): every call answers a body
`{"code", "msg" or "message", "data"}` whose `code` may carry an error even under
HTTP 200; a task moves waiting -> queuing -> generating -> success | fail; `resultJson`
is a JSON document inside a string; image-to-video and upscale chain on kie's own task
ids. Results expire upstream within a day, so the worker mirrors them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagine import catalog
from imagine.config import Rate, SettingsError, load_section
from imagine.providers.base import (
    CallbackRejected,
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

NAME = "kie"
IN_FLIGHT = ("waiting", "queuing", "generating")
CALLBACK_TOLERANCE = 300
"""Seconds a signed callback's timestamp may differ from our clock."""
CALLBACK_FALLBACK_POLL = 45.0
"""With callbacks, the first poll only checks that a callback was not lost."""


class KieSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGINE_KIE_", extra="ignore")

    api_key: SecretStr | None = Field(default=None, description="kie.ai API key.")
    base_url: str = Field(default="https://api.kie.ai", description="kie.ai API base URL.")
    webhook_key: SecretStr | None = Field(
        default=None,
        description="kie.ai webhook HMAC key; when set, unsigned callbacks are refused.",
    )
    callbacks: bool | None = Field(
        default=None,
        description="Give kie a callback URL; default: on when IMAGINE_PUBLIC_URL is set.",
    )
    poll_rate: Rate = Field(default=(10, 1.0), description="recordInfo calls allowed, per second.")
    create_rate: Rate = Field(default=(20, 10.0), description="createTask calls allowed.")
    timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds per kie call.")


class KieProvider:
    name = NAME
    engine: Literal["preview", "ai"] = "ai"
    polls_remotely = True
    models = frozenset(catalog.MODELS)

    def __init__(self, settings: KieSettings, api_key: str, context: ProviderContext) -> None:
        self._settings = settings
        self._context = context
        self._callbacks = (
            settings.callbacks
            if settings.callbacks is not None
            else context.settings.public_url is not None
        )
        if self._callbacks and context.settings.public_url is None:
            raise SettingsError(
                "invalid setting IMAGINE_KIE_CALLBACKS: kie can only call back a public "
                "address; set IMAGINE_PUBLIC_URL too"
            )
        self._webhook_key = (
            settings.webhook_key.get_secret_value().encode() if settings.webhook_key else None
        )
        self._client = upstream_client(
            NAME, settings, api_key, context.user_agent, redis_url=context.settings.redis_url
        )
        self.trusted_hosts = self._client.trusted_hosts

    # -- routing -------------------------------------------------------------------------

    def refusal(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> str | None:
        if model == catalog.UPSCALE and (source is None or not _made_by_kie(source)):
            made = f"{source.model} task made by {source.provider}" if source else "no kie task"
            return (
                "input.task_id: kie upscales only images it generated with "
                f"grok-imagine/text-to-image; task {given.get('task_id')} is a {made}"
            )
        if model == catalog.IMAGE_TO_VIDEO and source is not None and not _made_by_kie(source):
            if given.get("mode") == "spicy":
                return (
                    "input.mode: kie offers spicy only for images it generated itself; "
                    "use fun or normal"
                )
            if self._context.settings.public_url is None:
                # kie is sent our copy's URL, which must be reachable from kie.
                return (
                    "input.task_id: kie can animate an image it did not make only from a "
                    "public URL, and this server has no IMAGINE_PUBLIC_URL"
                )
            return source_index_problem(given, source)
        return None

    # -- the task ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Submitted:
        body: dict[str, Any] = {"model": job.model, "input": self._input(job)}
        if self._callbacks and job.callback_token:
            body["callBackUrl"] = self._context.callback_url(NAME, job.task_id, job.callback_token)
        response = await self._client.call(CREATE, "POST", "/api/v1/jobs/createTask", json=body)
        data = self._data(response, "createTask")
        upstream_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(upstream_id, str) or not upstream_id:
            raise ProviderError("kie answered createTask without a taskId", retryable=True)
        now = time.time()
        state = {"submitted_at": now, "callbacks": "callBackUrl" in body}
        return Submitted(
            upstream_id=upstream_id, poll_after=self._next_poll(state, now), state=state
        )

    async def poll(self, job: Job) -> Outcome:
        if job.callback is not None and job.callback.get("signed"):
            # Signed by kie: its word is taken as is, no poll needed. An unsigned callback
            # (only the URL's token vouches for it) just makes us ask kie now.
            told = _outcome_of(job.callback.get("data"), lambda: 0.0)
            if told is not None and not isinstance(told, Pending):
                return told
        response = await self._client.call(
            POLL, "GET", "/api/v1/jobs/recordInfo", params={"taskId": str(job.upstream_id)}
        )
        if response.status_code == 404 or _body_code(json_object(response)) == 404:
            # Just created tasks may not be visible yet; after a while the task is gone.
            if time.time() - float(job.state.get("submitted_at", 0)) < 120:
                raise ProviderError("kie does not know the task yet", retryable=True)
            return Failed("the provider no longer knows this task; submit it again")
        data = self._data(response, "recordInfo")
        outcome = _outcome_of(data, lambda: self._next_poll(job.state, time.time()))
        if outcome is None:
            raise ProviderError("kie answered recordInfo in an unknown shape", retryable=True)
        return outcome

    def _input(self, job: Job) -> dict[str, Any]:
        given = job.input
        source = job.source
        if job.model == catalog.UPSCALE:
            if source is None or not source.upstream_id:
                raise ProviderError("the task to upscale no longer exists", retryable=False)
            return {"task_id": source.upstream_id}
        sent = {
            name: given[name]
            for name in ("prompt", "aspect_ratio", "mode", "resolution")
            if given.get(name) is not None
        }
        if given.get("duration") is not None:
            sent["duration"] = str(given["duration"])  # kie documents it as a string
        if job.model == catalog.IMAGE_TO_VIDEO:
            if source is not None and _made_by_kie(source):
                sent["task_id"] = source.upstream_id
                sent["index"] = int(given.get("index") or 0)
            else:
                # kie takes one image; a source task made elsewhere is sent as our copy.
                url = source_image_url(given, source)
                if url is None:
                    raise ProviderError("the task has no source image", retryable=False)
                sent["image_urls"] = [url]
        return sent

    def _next_poll(self, state: Mapping[str, Any], now: float) -> float:
        """kie's guidance: every 2-3 s for the first 30 s, 5-10 s until two minutes,
        then 15-30 s. With callbacks, polls are only a fallback for a lost callback."""
        age = now - float(state.get("submitted_at", now))
        if state.get("callbacks"):
            return max(CALLBACK_FALLBACK_POLL - age, random.uniform(15, 30))
        if age < 30:
            return random.uniform(2, 3)
        if age < 120:
            return random.uniform(5, 10)
        return random.uniform(15, 30)

    def _data(self, response: Answer, call: str) -> Any:
        """`data` of a successful answer; an error (HTTP status or body code) raises."""
        body = json_object(response)
        code = _body_code(body)
        if response.status_code != 200:
            # The HTTP status says it failed; a body code, when given, says how.
            code = code if code not in (None, 200) else response.status_code
        elif body is None:
            raise ProviderError(
                f"kie answered {call} with something that is not JSON", retryable=True
            )
        if code not in (None, 200):
            detail = str((body or {}).get("msg") or (body or {}).get("message") or "")[:300]
            raise classify(NAME, code, detail, retry_after=retry_after(response))
        return (body or {}).get("data")

    # -- callbacks -----------------------------------------------------------------------

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, upstream_id: str | None
    ) -> dict[str, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CallbackRejected("the callback body is not JSON", 400) from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise CallbackRejected("the callback has no data object", 400)
        told_id = data.get("taskId") or data.get("task_id")
        if not isinstance(told_id, str) or not told_id:
            raise CallbackRejected("the callback names no taskId", 400)
        if upstream_id is not None and told_id != upstream_id:
            raise CallbackRejected("the callback is about another task", 400)
        if self._webhook_key is not None:
            self._check_signature(headers, told_id)
        return {"signed": self._webhook_key is not None, "data": data}

    def _check_signature(self, headers: Mapping[str, str], task_id: str) -> None:
        timestamp = headers.get("x-webhook-timestamp", "")
        signature = headers.get("x-webhook-signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
            raise CallbackRejected("the callback is not signed", 401)
        # Seconds since 1970 have 10 digits until 2286; int() refuses thousands of them.
        if len(timestamp) > 12 or abs(time.time() - int(timestamp)) > CALLBACK_TOLERANCE:
            raise CallbackRejected("the callback's timestamp is too old or in the future", 401)
        assert self._webhook_key is not None
        digest = hmac.new(
            self._webhook_key, f"{task_id}.{timestamp}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature.strip()):
            raise CallbackRejected("the callback's signature does not match", 401)

    # -- operations ----------------------------------------------------------------------

    async def check(self) -> Health:
        async def balance() -> float | None:
            response = await self._client.call(ACCOUNT, "GET", "/api/v1/chat/credit")
            found = self._data(response, "credit")
            return float(found) if isinstance(found, int | float) else None

        return await probe(balance)

    async def aclose(self) -> None:
        await self._client.aclose()


def create(context: ProviderContext) -> KieProvider:
    settings = load_section(KieSettings)
    return KieProvider(settings, required_key(settings.api_key, NAME), context)


def _made_by_kie(source: SourceTask) -> bool:
    return (
        source.provider == NAME
        and bool(source.upstream_id)
        and source.model == catalog.TEXT_TO_IMAGE
    )


def _body_code(body: dict[str, Any] | None) -> int | None:
    code = (body or {}).get("code")
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) <= 9:
        return int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _outcome_of(data: Any, next_poll: Any) -> Outcome | None:
    """A recordInfo `data` (or a callback's) as an outcome; None when it can't be read."""
    if not isinstance(data, dict):
        return None
    state = data.get("state")
    if state in IN_FLIGHT:
        # kie's market records don't document a progress figure; some of its models send one.
        return Pending(poll_after=float(next_poll()), progress=percent(data.get("progress")))
    if state == "success":
        urls = _result_urls(data.get("resultJson"))
        return Succeeded([Remote(url) for url in urls]) if urls else None
    if state == "fail":
        reason = str(data.get("failMsg") or "no reason given")[:500]
        code = data.get("failCode")
        suffix = f" (code {code})" if code else ""
        return Failed(f"the provider could not generate this: {reason}{suffix}")
    return None


def _result_urls(result_json: Any) -> list[str]:
    """`resultJson` is JSON inside a string; some answers already decode it."""
    if isinstance(result_json, str):
        try:
            result_json = orjson.loads(result_json)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(result_json, dict):
        return []
    urls = result_json.get("resultUrls")
    if not isinstance(urls, list):
        return []
    return [url for url in urls if isinstance(url, str) and url.startswith(("http://", "https://"))]

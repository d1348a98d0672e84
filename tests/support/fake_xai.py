"""A fake xAI API over a real loopback socket: synchronous image generation, deferred
video generation (pending -> done | failed | expired), and the model list."""

from __future__ import annotations

import base64
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.fake_upstream import Answer, FakeUpstream, json_response

ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")


@dataclass
class XaiVideo:
    id: str
    body: dict[str, Any]
    ready: float
    ending: str
    url: str | None
    """None: it ends done without a URL."""
    fault: str | None = None
    """One of TASK_FAULTS, or None."""
    created: float = 0.0


class FakeXai(FakeUpstream):
    api_key = "xai-test-key"

    def __init__(self, *, task_seconds: float = 0.3, latency: float = 0.0) -> None:
        super().__init__(task_seconds=task_seconds, latency=latency)
        self.image_format = "url"
        """How images come back: "url" or "b64_json" (whatever was asked for)."""
        self.pending_status = 202
        """The HTTP status of a pending video (200 or 202: clients see both)."""
        self.video_ending = "done"
        """How the next videos end: done, failed or expired."""
        self.block_reason: str | None = None
        self.videos: dict[str, XaiVideo] = {}
        self.image_bodies: list[dict[str, Any]] = []

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self._image, methods=["POST"]),
            Route("/v1/videos/generations", self._video, methods=["POST"]),
            Route("/v1/videos/{request_id}", self._video_status, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ]

    def error_response(self, answer: Answer, headers: dict[str, str]) -> Response:
        return json_response({"code": "error", "error": answer.message}, answer.status, headers)

    def unauthorized(self, operation: str) -> Response:
        return self._refuse(400, "Incorrect API key provided")  # xAI's answer to a bad key

    def _refuse(self, status: int, message: str) -> Response:
        return json_response({"code": "error", "error": message}, status)

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def _image(self, request: Request) -> Response:
        refused = await self.admit("create", request)
        if refused is not None:
            return refused
        body = await self._body(request)
        if body is None or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return self._refuse(422, "prompt is required")
        self.image_bodies.append(body)
        if self.block_reason:
            return json_response({"block_reason": self.block_reason, "data": []})
        # Images are made within the call: they can't get stuck or fail later.
        fault = self.draw_task_fault(("no_results", "missing_result", "trickle"))
        self.log_task(body["prompt"], fault)
        if fault == "no_results":
            return json_response({"block_reason": None, "data": []})
        name = f"img-{uuid.uuid4().hex}.png"
        url = self.add_result(name, video=False, fault=fault)
        item: dict[str, Any] = {"mime_type": "image/png", "revised_prompt": ""}
        if self.image_format == "b64_json" and fault is None:
            item["b64_json"] = base64.b64encode(self.result_files[name][0]).decode()
        else:
            item["url"] = url
        return json_response(
            {"block_reason": None, "data": [item], "usage": {"cost_in_usd_ticks": 200000000}}
        )

    async def _video(self, request: Request) -> Response:
        refused = await self.admit("create", request)
        if refused is not None:
            return refused
        body = await self._body(request)
        if body is None or not isinstance(body.get("prompt"), str):
            return self._refuse(422, "prompt is required")
        duration = body.get("duration", 8)
        if not isinstance(duration, int) or not 1 <= duration <= 15:
            return self._refuse(400, "duration must be 1 to 15 seconds")
        if body.get("aspect_ratio", "16:9") not in ASPECTS:
            return self._refuse(400, "unsupported aspect_ratio")
        image = body.get("image")
        if image is not None and not (
            isinstance(image, dict)
            and str(image.get("url", "")).startswith(("http", "data:image/"))
        ):
            return self._refuse(400, "image.url must be a URL or a data URI")
        video_id = uuid.uuid4().hex
        fault = self.draw_task_fault()
        self.log_task(body["prompt"], fault)
        self.videos[video_id] = XaiVideo(
            id=video_id,
            body=body,
            ready=math.inf if fault == "stuck" else time.time() + self.task_seconds,
            ending="failed" if fault == "fail" else self.video_ending,
            url=(
                None
                if fault == "no_results"
                else self.add_result(f"{video_id}.mp4", video=True, fault=fault)
            ),
            fault=fault,
            created=time.time(),
        )
        return json_response({"request_id": video_id})

    async def _video_status(self, request: Request) -> Response:
        video_id = request.path_params["request_id"]
        self.polls_by_task[video_id] += 1
        refused = await self.admit("poll", request)
        if refused is not None:
            return refused
        video = self.videos.get(video_id)
        if video is None:
            return self._refuse(404, "request not found")
        if time.time() < video.ready:
            # xAI's answer carries `progress`, an integer percent (proto VideoResponse).
            done = (time.time() - video.created) / max(self.task_seconds, 1e-3)
            progress = min(99, int(100 * done))
            return json_response({"status": "pending", "progress": progress}, self.pending_status)
        model = "grok-imagine-video"
        if video.ending == "failed":
            return json_response(
                {
                    "status": "failed",
                    "video": {"duration": 0, "respect_moderation": True},
                    "model": model,
                    "error": {"code": "internal_error", "message": "generation failed upstream"},
                }
            )
        if video.ending == "expired":
            return json_response({"status": "expired", "model": model})
        shown: dict[str, Any] = {"duration": 6, "respect_moderation": True}
        if video.url is not None:
            shown["url"] = video.url
        return json_response({"status": "done", "video": shown, "model": model})

    async def _models(self, request: Request) -> Response:
        refused = await self.admit("models", request)
        if refused is not None:
            return refused
        return json_response({"data": [{"id": "grok-imagine-image"}, {"id": "grok-imagine-video"}]})

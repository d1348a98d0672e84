"""A fake kie.ai market jobs API over a real loopback socket.

It follows docs.kie.ai: createTask / recordInfo / chat/credit, the body `code` (errors
can come under HTTP 200 with `errors_in_body`), `msg` or `message`, task states waiting ->
generating -> success | fail, a double-encoded `resultJson`, chaining by kie task id,
and callbacks to `callBackUrl`, signed with the webhook HMAC key when one is set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.fake_upstream import Answer, FakeUpstream, json_response

FAILED_BY_FAULT = ("500", "the fake failed this task")
"""(failCode, failMsg) of a task given the fault "fail"."""

T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"
ENUMS = {
    "aspect_ratio": ("2:3", "3:2", "1:1", "16:9", "9:16"),
    "mode": ("fun", "normal", "spicy"),
    "duration": ("6", "10"),
    "resolution": ("480p", "720p"),
}


@dataclass
class KieTask:
    id: str
    model: str
    input: dict[str, Any]
    callback_url: str | None
    created: float
    ready: float
    fail: tuple[str, str] | None = None
    result_urls: list[str] = field(default_factory=list)
    callback_status: int | None = None
    fault: str | None = None
    """One of TASK_FAULTS, or None."""


class FakeKie(FakeUpstream):
    api_key = "kie-test-key"

    def __init__(
        self,
        *,
        task_seconds: float = 0.3,
        latency: float = 0.0,
        callbacks: bool = True,
        webhook_key: str | None = None,
        callback_shape: str = "full",
        errors_in_body: bool = False,
        images_per_task: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__(task_seconds=task_seconds, latency=latency)
        self.callbacks = callbacks
        """Deliver callbacks to callBackUrl when a task ends."""
        self.webhook_key = webhook_key
        """Sign callbacks (X-Webhook-Timestamp, X-Webhook-Signature) with this key."""
        self.callback_shape = callback_shape
        """"full" (state and resultJson, as kie's market docs show) or "minimal"
        (code, msg and data.taskId only, as the grok pages document)."""
        self.errors_in_body = errors_in_body
        """Send errors as HTTP 200 with the code in the body."""
        self.images_per_task = images_per_task
        self.progress = progress
        """Records of unfinished tasks carry `progress`, a fraction as text ("0.40"), as
        some of kie's models send it (its market docs show none)."""
        self.balance = 1000
        self.tasks: dict[str, KieTask] = {}
        self.fail_next: list[tuple[str, str]] = []
        """(failCode, failMsg) for the next created tasks: they end in state fail."""
        self.fail_marker: str | None = None
        """Tasks whose prompt contains this end in state fail (FAILED_BY_FAULT), so a test
        knows beforehand exactly which of many concurrent tasks fail."""
        self.created_bodies: list[dict[str, Any]] = []
        self.callbacks_sent: list[tuple[str, int]] = []
        """(kie task id, HTTP status) of every callback sent; status 0: no answer."""
        self.callback_errors: Counter[str] = Counter()
        """Why callbacks got no answer: the exception's name."""
        self._http: httpx.AsyncClient | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/jobs/createTask", self._create, methods=["POST"]),
            Route("/api/v1/jobs/recordInfo", self._record, methods=["GET"]),
            Route("/api/v1/chat/credit", self._credit, methods=["GET"]),
        ]

    def error_response(self, answer: Answer, headers: dict[str, str]) -> Response:
        return self._error(answer.code or answer.status, answer.message, answer.status, headers)

    def unauthorized(self, operation: str) -> Response:
        # recordInfo's documented wording differs from the other endpoints'.
        message = "Unauthorized" if operation == "poll" else "You do not have access permissions"
        return self._error(401, message)

    def _error(
        self,
        code: int,
        message: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        http_status = 200 if self.errors_in_body and status is None else (status or code)
        return json_response({"code": code, "msg": message, "data": None}, http_status, headers)

    # -- createTask --------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        refused = await self.admit("create", request)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return self._error(422, "body is not JSON")
        self.created_bodies.append(body)
        problem = self._invalid(body)
        if problem is not None:
            return self._error(422, problem)
        now = time.time()
        task = KieTask(
            id=uuid.uuid4().hex,
            model=body["model"],
            input=body["input"],
            callback_url=body.get("callBackUrl"),
            created=now,
            ready=now + self.task_seconds,
            fail=self.fail_next.pop(0) if self.fail_next else self._marked(body["input"]),
        )
        if task.fail is None:
            task.fault = self.draw_task_fault()
        self.log_task(task.input.get("prompt"), task.fault)
        if task.fault == "fail":
            task.fail = FAILED_BY_FAULT
        elif task.fault == "stuck":
            task.ready = math.inf
        video = task.model in (T2V, I2V)
        if task.fail is None and task.fault != "no_results":
            count = self.images_per_task if task.model == T2I else 1
            task.result_urls = [
                self.add_result(f"{task.id}-{n}.{'mp4' if video else 'png'}", video, task.fault)
                for n in range(count)
            ]
        self.tasks[task.id] = task
        assert self.loop is not None
        self.loop.call_later(self.task_seconds, lambda: asyncio.ensure_future(self._finish(task)))
        return json_response({"code": 200, "msg": "success", "data": {"taskId": task.id}})

    def _marked(self, given: dict[str, Any]) -> tuple[str, str] | None:
        prompt = given.get("prompt")
        if self.fail_marker and isinstance(prompt, str) and self.fail_marker in prompt:
            return FAILED_BY_FAULT
        return None

    def _invalid(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return "input is required"
        model, given = body.get("model"), body["input"]
        if model not in (T2I, T2V, I2V, UPSCALE):
            return f"unknown model {model}"
        for name, allowed in ENUMS.items():
            if name in given and given[name] not in allowed:
                return f"{name} must be one of {', '.join(allowed)}"
        prompt = given.get("prompt")
        if model in (T2I, T2V) and (not isinstance(prompt, str) or not prompt):
            return "prompt is required"
        if isinstance(prompt, str) and len(prompt) > 5000:
            return "prompt is longer than 5000 characters"
        if model == I2V:
            urls, source = given.get("image_urls"), given.get("task_id")
            if bool(urls) == bool(source):
                return "give image_urls or task_id, not both"
            if urls and (not isinstance(urls, list) or len(urls) != 1):
                return "image_urls takes one URL"
            if source and not self._succeeded_image(source):
                return "task_id is not a successful grok-imagine image task"
            if urls and given.get("mode") == "spicy":
                return "spicy mode is not available with external images"
        if model == UPSCALE and not self._succeeded_image(given.get("task_id")):
            return "Only images generated by Kie AI models can be upscaled"
        return None

    def _succeeded_image(self, task_id: Any) -> bool:
        task = self.tasks.get(task_id) if isinstance(task_id, str) else None
        return task is not None and task.model == T2I and task.fail is None and self._done(task)

    @staticmethod
    def _done(task: KieTask) -> bool:
        return time.time() >= task.ready

    # -- recordInfo --------------------------------------------------------------------

    async def _record(self, request: Request) -> Response:
        task_id = request.query_params.get("taskId", "")
        self.polls_by_task[task_id] += 1
        refused = await self.admit("poll", request)
        if refused is not None:
            return refused
        if not task_id:
            return self._error(400, "taskId parameter is required")
        task = self.tasks.get(task_id)
        if task is None:
            return self._error(404, "Task not found")
        return json_response({"code": 200, "message": "success", "data": self.record(task)})

    def record(self, task: KieTask) -> dict[str, Any]:
        now = time.time()
        if now < task.ready:
            state = "waiting" if now < task.created + self.task_seconds * 0.2 else "generating"
        else:
            state = "fail" if task.fail else "success"
        done = state in ("success", "fail")
        shown = {} if done or not self.progress else {"progress": self._progress(task, now)}
        return shown | {
            "taskId": task.id,
            "model": task.model,
            "state": state,
            "param": orjson.dumps(
                {"model": task.model, "callBackUrl": task.callback_url, "input": task.input}
            ).decode(),
            "resultJson": (
                orjson.dumps({"resultUrls": task.result_urls}).decode()
                if state == "success"
                else ""
            ),
            "failCode": task.fail[0] if state == "fail" and task.fail else "",
            "failMsg": task.fail[1] if state == "fail" and task.fail else "",
            "costTime": int((task.ready - task.created) * 1000) if done else None,
            "completeTime": int(task.ready * 1000) if done else None,
            "createTime": int(task.created * 1000),
            "updateTime": int(min(now, task.ready) * 1000),
        }

    def _progress(self, task: KieTask, now: float) -> str:
        return f"{min(0.99, (now - task.created) / max(task.ready - task.created, 1e-3)):.2f}"

    async def _credit(self, request: Request) -> Response:
        refused = await self.admit("credit", request)
        if refused is not None:
            return refused
        return json_response({"code": 200, "msg": "success", "data": self.balance})

    # -- callbacks ---------------------------------------------------------------------

    async def _finish(self, task: KieTask) -> None:
        if not (self.callbacks and task.callback_url) or task.fault == "stuck":
            return
        record = self.record(task)
        if self.callback_shape == "minimal":
            data: dict[str, Any] = {"taskId": task.id}
        else:
            data = record
        failed = record["state"] == "fail"
        body = {
            "code": 501 if failed else 200,
            "msg": "Playground task failed."
            if failed
            else "Playground task completed successfully.",
            "data": data,
        }
        headers = {"content-type": "application/json"}
        if self.webhook_key is not None:
            headers.update(self.signature(task.id))
        await self.deliver(task, orjson.dumps(body), headers)

    def signature(self, task_id: str, timestamp: int | None = None) -> dict[str, str]:
        """kie's webhook signature headers for a task id."""
        assert self.webhook_key is not None
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new(
            self.webhook_key.encode(), f"{task_id}.{stamp}".encode(), hashlib.sha256
        ).digest()
        return {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": base64.b64encode(digest).decode(),
        }

    async def shutdown(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def deliver(self, task: KieTask, body: bytes, headers: dict[str, str]) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=15)
        assert task.callback_url is not None
        try:
            response = await self._http.post(task.callback_url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            self.callback_errors[type(exc).__name__] += 1
            status = 0
        task.callback_status = status
        self.callbacks_sent.append((task.id, status))

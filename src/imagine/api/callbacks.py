"""Where upstream providers call back (kie.ai's callBackUrl). Not part of the public API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from imagine.api.deps import RuntimeDep
from imagine.api.envelope import ok
from imagine.services.callbacks import receive_callback

router = APIRouter(include_in_schema=False)


@router.post("/callbacks/{provider}/{task_id}/{token}")
async def upstream_callback(
    provider: str, task_id: str, token: str, request: Request, runtime: RuntimeDep
) -> Response:
    stored = await receive_callback(
        runtime.db,
        runtime.router,
        provider_name=provider,
        task_id=task_id,
        token=token,
        headers=request.headers,
        body=await request.body(),
    )
    return ok({"task_id": task_id, "accepted": stored})

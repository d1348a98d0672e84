"""Caps on what a request may carry: its headers (431), its body, enforced while it
streams in (413; Content-Length can lie), and no NUL character in its path (400)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine.api.envelope import error
from imagine.errors import PayloadTooLarge


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            # No resource is named so, and no database could store the name.
            response = error(400, "the path holds a NUL character (%00); remove it")
            await response(scope, receive, send)
            return
        headers = scope["headers"]
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            response = error(
                431,
                f"request headers too large: send at most {self.max_header_bytes} bytes "
                "of headers and URL",
            )
            await response(scope, receive, send)
            return
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    response = error(413, self._message())
                    await response(scope, receive, send)
                    return
                break
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: send at most {self.max_bytes} bytes"

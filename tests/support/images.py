"""A real HTTP server on loopback that serves source images (and failures) to the server."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from PIL import Image


def png_bytes(size: tuple[int, int] = (120, 80), color: str = "orange") -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    for x in range(size[0]):
        image.putpixel((x, x % size[1]), (0, 0, 255))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/cat.png": (200, "image/png", png_bytes()),
    "/notes.txt": (200, "text/plain", b"just text, not an image"),
    "/gone.png": (404, "text/plain", b"not here"),
    "/busy.png": (503, "text/plain", b"try later"),
}
TRICKLE_SECONDS = 2.0
"""Paths under /slow/ are served one byte every this many seconds."""

FETCHES: Counter[str] = Counter()
"""Requests each path was asked for, across every image server of this process."""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        FETCHES[self.path] += 1
        if self.path.startswith("/slow/"):
            self._trickle(ROUTES["/cat.png"][2])
            return
        if self.path == "/redirect" or self.path.startswith("/redirect-to/"):
            # /redirect-to/<url, percent-encoded>: a redirect anywhere, e.g. inward.
            target = unquote(self.path.removeprefix("/redirect-to/"))
            self.send_response(302)
            self.send_header("Location", "/cat.png" if self.path == "/redirect" else target)
            self.end_headers()
            return
        code, content_type, body = ROUTES.get(self.path, (404, "text/plain", b"no"))
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(TRICKLE_SECONDS)
        except OSError:
            return  # the client hung up, as it should

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def image_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True  # trickling handlers never hold up the shutdown
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()

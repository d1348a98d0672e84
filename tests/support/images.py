"""A real HTTP server on loopback that serves source images (and failures) to the server."""

from __future__ import annotations

import io
import threading
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
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
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

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def image_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()

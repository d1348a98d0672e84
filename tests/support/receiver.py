"""A webhook receiver on a loopback port: records every delivery, answers as scripted."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int


@dataclass
class Receiver:
    url: str
    answers: deque[int] = field(default_factory=deque)
    """Statuses for the next deliveries; 204 once they run out."""
    received: list[Received] = field(default_factory=list)


@contextmanager
def receiver(port: int = 0, answers: tuple[int, ...] = ()) -> Iterator[Receiver]:
    state = Receiver(url="", answers=deque(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = state.answers.popleft() if state.answers else 204
            state.received.append(Received(body, dict(self.headers.items()), status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()

"""`imagine worker --metrics-port`: /metrics, /healthz and /readyz of a worker process.

The stdlib's threading WSGI server with prometheus_client's own WSGI app, on a thread of
its own: a scrape never waits for the event loop to get round to it, and the loop never
runs HTTP parsing for it. What needs the database (readiness, the queue gauges) is handed
to the loop that owns the database handle (`run_coroutine_threadsafe`) and waited for a
bounded time; nothing of the handle is touched from this thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import orjson
from prometheus_client import make_wsgi_app

from imagine.metrics import QUEUE
from imagine.services.health import CHECK_TIMEOUT, readiness_problem, refresh_queue_gauges
from imagine.store.db import Database


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None  # scrapes every few seconds would drown the worker's own lines


class MetricsServer:
    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop, host: str, port: int):
        """Binds at once, so a port in use stops the start (OSError) before any work."""
        self._db = db
        self._loop = loop
        self._metrics = make_wsgi_app()
        self._httpd = make_server(
            host, port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="imagine-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocks until the server thread is done; call it off the loop."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def _on_loop(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        future = asyncio.run_coroutine_threadsafe(work(), self._loop)
        return future.result(timeout=CHECK_TIMEOUT + 1)

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            try:
                self._on_loop(lambda: refresh_queue_gauges(self._db))
            except Exception:
                QUEUE.state = None  # left out; the rest of the scrape still counts
            rendered: Iterable[bytes] = self._metrics(environ, start_response)
            return rendered
        if path == "/healthz":
            return _envelope(start_response, 200, "success", {"status": "ok"})
        if path == "/readyz":
            try:
                problem = self._on_loop(lambda: readiness_problem(self._db))
            except Exception:
                problem = "the worker's event loop did not answer in time"
            if problem is None:
                return _envelope(start_response, 200, "success", {"status": "ready"})
            return _envelope(start_response, 503, problem, None)
        return _envelope(
            start_response,
            404,
            f"no such path {path[:100]}: use /metrics, /healthz or /readyz",
            None,
        )


_REASONS = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


def _envelope(start_response: StartResponse, code: int, message: str, data: Any) -> list[bytes]:
    body = orjson.dumps({"code": code, "message": message, "data": data})
    start_response(
        _REASONS[code],
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]

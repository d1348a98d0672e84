"""What `imagine serve` runs uvicorn with: its listening sockets, bound before anything
else happens, and a server whose stop by a signal is a clean exit."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to `host:port` (each address the name resolves to), ready to hand to
    uvicorn. Raises OSError when the address is taken or can't be bound."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        # One socket per address family: "::" and "0.0.0.0" each, not per duplicate.
        for family, kind, proto, _, address in {(f, k, p, "", a) for f, k, p, _, a in found}:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class QuietStop(uvicorn.Server):
    """uvicorn's server, except that after a graceful stop on SIGINT or SIGTERM the
    process exits 0. uvicorn raises the signal again once it has shut down, so the
    process ends "killed by SIGTERM" (status 143, `make: *** Error 143`) though nothing
    went wrong."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

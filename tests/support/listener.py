"""Plain TCP listeners on loopback that count every connection made to them: the proof
that the server reached nothing it was told not to reach."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from tests.support.running import Running


def _ipv6_socket(port: int) -> socket.socket | None:
    """A socket listening on [::1]:port, or None where IPv6 loopback is unavailable or
    the port is taken there."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::1", port))
        sock.listen(64)
    except OSError:
        sock.close()
        return None
    return sock


def _bind() -> tuple[int, socket.socket, socket.socket | None]:
    """One port, listened on at 127.0.0.1 and, when possible, at [::1] as well."""
    fallback: tuple[int, socket.socket] | None = None
    for _ in range(20):
        sock4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock4.bind(("127.0.0.1", 0))
        sock4.listen(64)
        port: int = sock4.getsockname()[1]
        sock6 = _ipv6_socket(port)
        if sock6 is not None:
            if fallback is not None:
                fallback[1].close()
            return port, sock4, sock6
        if fallback is None:
            fallback = (port, sock4)
        else:
            sock4.close()
    assert fallback is not None
    return fallback[0], fallback[1], None


class Listener(Running):
    """Counts connections on 127.0.0.1:port (and [::1]:port when the machine has IPv6
    loopback); each is closed at once, without a byte sent."""

    def __init__(self) -> None:
        self.port, sock4, sock6 = _bind()
        self.ipv6 = sock6 is not None
        self._sockets = [sock for sock in (sock4, sock6) if sock is not None]
        self._lock = threading.Lock()
        self._peers: list[str] = []
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve, args=(sock,), daemon=True)
            for sock in self._sockets
        ]

    @property
    def peers(self) -> list[str]:
        """The address of each connection accepted so far."""
        with self._lock:
            return list(self._peers)

    @property
    def connections(self) -> int:
        return len(self.peers)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._peers.append(str(peer[0]))
            conn.close()

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

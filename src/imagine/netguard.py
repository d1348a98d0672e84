"""Rules for URLs the server is given and will fetch: scheme, host, and where it points.

The server must not be usable to reach its own network: a URL whose host is (or
resolves to) a private, loopback, link-local, multicast or reserved address is refused
unless the operator allows it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def url_problem(url: str) -> str | None:
    """Why this string is not a fetchable http(s) URL, or None when it is one."""
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return None


def is_public_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def literal_address(url: str) -> IPAddress | None:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refused_literal(url: str, *, allow_private: bool) -> bool:
    """True when the URL names a non-public IP literal (knowable without any lookup)."""
    address = literal_address(url)
    return address is not None and not allow_private and not is_public_address(address)


async def resolve_checked(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Resolve the URL's host and refuse it unless every address is allowed.

    Raises ValueError with a message for the user.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = literal_address(url)
    if literal is not None:
        # Nothing to resolve (and no thread hand-off for the resolver).
        if not allow_private and not is_public_address(literal):
            raise ValueError(
                f"the host {host!r} is a private or reserved address, "
                "which this server does not fetch"
            )
        return [literal]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError(f"the host {host!r} could not be resolved") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise ValueError(
                    f"the host {host!r} points to a private or reserved address, "
                    "which this server does not fetch"
                )
    return addresses

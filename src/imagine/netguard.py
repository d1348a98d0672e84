"""Rules for URLs the server is given and will fetch: scheme, host, and where it points.

The server must not be usable to reach its own network: a URL whose host is (or
resolves to) a private, loopback, link-local, multicast or reserved address is refused
unless the operator allows it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

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
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return "has a host name that is not valid"
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible):
    each must be public too, or `::ffff:10.0.0.1` and friends would reach the LAN."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or int(address) >> 32 == 0 or int(address) >> 32 == 0xFFFF0000:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def url_without_secrets(url: str) -> str:
    """A URL as it may be shown back: no credentials, no query string, no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_public_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(is_public_address(inner) for inner in embedded)
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


class RefusedAddress(Exception):
    """A host that resolved to an address this server does not connect to."""


class CheckedResolver(AbstractResolver):
    """aiohttp resolves hosts through this, and connects to the addresses it returns: each
    one is checked here, so the checked address is the one connected to and a name can't
    be re-pointed at the local network between the check and the connection (DNS
    rebinding). IP literals never reach a resolver; callers check those themselves."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private
        self.trusted_hosts: frozenset[str] = frozenset()
        """Hosts the operator configured (provider APIs): private addresses allowed."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private and host not in self.trusted_hosts:
            for result in results:
                if not is_public_address(ipaddress.ip_address(result["host"])):
                    raise RefusedAddress(
                        f"the host {host!r} points to a private or reserved address, "
                        "which this server does not fetch"
                    )
        return results

    async def close(self) -> None:
        await self._inner.close()

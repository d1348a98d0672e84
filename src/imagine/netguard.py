"""Rules for URLs the server is given and will fetch: scheme, host, and where it points.

The server must not be usable to reach its own network: a URL whose host is (or
resolves to) a private, loopback, link-local, multicast or reserved address is refused
unless the operator allows it.

Hosts are read here the way the system resolver reads them, never by the HTTP client's
own parsing: every form `inet_aton` accepts (`2130706433`, `127.1`, `0177.0.0.1`,
`0x7f.1`), a trailing dot, IDNA forms that map onto digits and dots (full-width digits),
and IPv6 addresses that carry an IPv4 one. A URL is then handed to the client with its
host written canonically (`127.0.0.1`, punycode), so what was checked is what is
connected to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

MAX_URL = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class InvalidHost(ValueError):
    """A host no resolver would take for a name or an address."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL as the server will fetch it."""

    url: str
    """The URL with its host written canonically: what the HTTP client is given."""
    host: str
    """The canonical host: an ASCII name in lower case, or an address."""
    address: IPAddress | None
    """The address the host denotes without any lookup (an IP literal in any form)."""


def _inet_aton(host: str) -> ipaddress.IPv4Address:
    """An IPv4 address in every form the C library's `inet_aton` takes: one to four
    parts, each decimal, octal (leading 0) or hexadecimal (0x), the last filling the
    remaining bytes."""
    parts = host.split(".")
    if len(parts) > 4:
        raise InvalidHost(host)
    values = []
    for part in parts:
        if not _NUMERIC_LABEL.match(part):
            raise InvalidHost(host)
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0") and len(part) > 1:
            if not set(part) <= set("01234567"):
                raise InvalidHost(host)
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (4 - len(leading)):
        raise InvalidHost(host)
    number = last
    for position, value in enumerate(leading):
        number |= value << (8 * (3 - position))
    return ipaddress.IPv4Address(number)


def canonical_host(hostname: str) -> tuple[str, IPAddress | None]:
    """(the host as it is connected to, the address it denotes without a lookup).

    Raises InvalidHost for a host that is neither a name nor an address, including one
    whose last label is numeric but which is no IPv4 address (as browsers do)."""
    if "%" in hostname:
        raise InvalidHost(hostname)  # zone ids and escapes: never a public host
    if ":" in hostname:
        try:
            address = ipaddress.IPv6Address(hostname)
        except ValueError:
            raise InvalidHost(hostname) from None
        return str(address), address
    try:
        name = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidHost(hostname) from None
    if name.endswith("."):
        name = name[:-1]
    if not name or not _NAME.match(name):
        raise InvalidHost(hostname)
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        address4 = _inet_aton(name)
        return str(address4), address4
    return name, None


def target(url: str) -> Target:
    """The URL as it will be fetched; raises InvalidHost when its host is not one."""
    parts = urlsplit(url)
    host, address = canonical_host(parts.hostname or "")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if "@" in parts.netloc:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
    return Target(
        urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), host, address
    )


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
        found = target(url)
    except InvalidHost:
        return "has a host that is neither a valid name nor a valid address"
    try:
        # The HTTP client must read the URL as we do, or it would refuse it later.
        if (URL(found.url).host or "").strip("[]").lower() != found.host:
            return "is not a valid URL"
    except ValueError:
        return "is not a valid URL"
    return None


def is_loopback_name(host: str) -> bool:
    """Names every resolver answers with a loopback address (RFC 6761, /etc/hosts)."""
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""The well-known NAT64 prefix and the local-use one (RFC 8215): both reach IPv4."""
_NOT_PUBLIC = (ipaddress.ip_network("fec0::/10"),)
"""Private although some Python releases' tables call them global (site-local)."""


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
    if (
        any(address in network for network in _NAT64)
        or int(address) >> 32 == 0
        or int(address) >> 32 == 0xFFFF0000
    ):
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
        if any(address in network for network in _NOT_PUBLIC):
            return False
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(is_public_address(inner) for inner in embedded)
    return address.is_global and not address.is_multicast


def known_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why the URL may not be fetched, where that is known without a lookup: its host is
    a non-public address in any form, or a name that always means this machine."""
    if allow_private:
        return None
    try:
        found = target(url)
    except InvalidHost:
        return None  # url_problem reports it
    if found.address is not None and not is_public_address(found.address):
        return f"points to a private or reserved address ({found.address})"
    if found.address is None and is_loopback_name(found.host):
        return f"points to a private or reserved address (the host {found.host!r})"
    return None


class RefusedAddress(Exception):
    """A host that is, or resolved to, an address this server does not connect to.
    Final: asking again gives the same answer."""


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

"""Host names with known answers on this machine, for tests of what a name resolves to."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from imagine.netguard import is_loopback_name


def name_resolving_to_loopback() -> str:
    """A name that is not one of the well-known loopback names (those are refused before
    any lookup) but that this machine's resolver answers with a loopback address, as
    /etc/hosts usually does for the machine's own name."""
    for name in (socket.gethostname(), socket.getfqdn()):
        if not name or is_loopback_name(name.lower()):
            continue
        try:
            found = socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        if found and all(ipaddress.ip_address(info[4][0]).is_loopback for info in found):
            return name
    pytest.skip("no name on this machine resolves to a loopback address")

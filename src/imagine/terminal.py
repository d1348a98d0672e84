"""The consoles the `imagine` command writes to."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

UNLIMITED = 1_000_000
"""The width of output that is not a terminal: piped or redirected, nothing is cut."""


def _console(stream: TextIO, *, stderr: bool) -> Console:
    width = None if stream.isatty() else UNLIMITED
    return Console(stderr=stderr, soft_wrap=True, width=width)


console = _console(sys.stdout, stderr=False)
err_console = _console(sys.stderr, stderr=True)  # one error, one line

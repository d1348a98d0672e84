"""The consoles the `imagine` command writes to."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console

UNLIMITED = 1_000_000
"""The width of output that is not a terminal: piped or redirected, nothing is cut."""


def _console(stream: TextIO, *, stderr: bool) -> Console:
    width = None if stream.isatty() else UNLIMITED
    return Console(stderr=stderr, soft_wrap=True, width=width)


console = _console(sys.stdout, stderr=False)
err_console = _console(sys.stderr, stderr=True)  # one error, one line


def command_name() -> str:
    """How to run the `imagine` command again from here, for hints that are pasted as
    printed: `imagine` when that is on the PATH, else the path it was started by
    (`.venv/bin/imagine` under `make serve`, whose venv is not on the PATH)."""
    started = Path(sys.argv[0])
    if started.name != "imagine":  # `python -m imagine`
        return "imagine"
    on_path = shutil.which("imagine")
    if on_path is not None and Path(on_path).resolve() == started.resolve():
        return "imagine"
    try:
        return str(started.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(started.absolute())

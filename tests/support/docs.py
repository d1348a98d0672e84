"""The fenced blocks of the README and docs/, as the tests that run them see them."""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "<!-- not run by the tests"
"""Put on the line above a block the tests can't run, followed by `: why -->`."""

_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<code>.*?)\n```", re.S)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    not_run: str | None
    """Why the tests don't run it, from its marker; None for a block they run."""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path, lang: str | None = None) -> list[Block]:
    """The fenced blocks of one document, in order (of one language, if given)."""
    text = path.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        before = match["before"].strip()
        not_run = None
        if before.startswith(NOT_RUN):
            not_run = before.removeprefix(NOT_RUN).removesuffix("-->").strip(" :")
        line = text.count("\n", 0, match.start("code")) + 1
        if lang is None or match["lang"] == lang:
            found.append(Block(path, line, match["lang"], match["code"], not_run))
    return found


def like_a_checkout(folder: Path) -> Path:
    """Make `folder` look like this checkout to a block: `.venv/` is there (this Python's)."""
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def command_lines(code: str) -> list[list[str]]:
    """Each command of a shell block as words, without comments, continuations joined and
    leading `NAME=value` settings dropped."""
    commands = []
    pending = ""
    for line in code.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote that closes on a later line
            continue
        pending = ""
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words and words[-1] == "&":
            words.pop()
        if words:
            commands.append(words)
    return commands

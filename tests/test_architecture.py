"""The shape of the code, checked: every write to the tasks table is a lifecycle
transition (import-linter checks the import arrows in `make check`)."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "imagine"
LIFECYCLE = SOURCE / "services" / "tasks" / "lifecycle.py"
MIGRATIONS = SOURCE / "store" / "migrations"
# SQLAlchemy Core (`update(tasks)`, `tasks.update()`, `insert(tasks)`...) or raw SQL.
TASK_WRITE = re.compile(
    r"\b(update|insert|delete)\(\s*tasks\b"
    r"|\btasks\.(update|insert|delete)\("
    r"|\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+tasks\b",
    re.IGNORECASE,
)


def test_every_task_row_write_is_in_the_lifecycle_module() -> None:
    writes = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path != LIFECYCLE and MIGRATIONS not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TASK_WRITE.search(line)
    ]
    assert writes == []


def test_the_lifecycle_module_does_write_task_rows() -> None:
    """The pattern above finds the writes it is meant to find."""
    found = [line for line in LIFECYCLE.read_text().splitlines() if TASK_WRITE.search(line)]
    assert len(found) >= 5

"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator

E = TypeVar("E", bound=StrEnum)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that must be timezone-aware going in and is always UTC coming out.

    SQLite has no timezone type, so values are stored as naive UTC text there, in the
    format SQLAlchemy's SQLite dialect uses (`2026-11-25 01:52:33.593748`), which sorts
    and compares correctly as text. PostgreSQL keeps `timestamptz`. Naive datetimes are
    refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # Timestamps are on every hot statement; on SQLite the generic processor chain
    # (decorator, then the dialect's formatter) costs several times the C-level
    # isoformat round trip below, which writes and reads the very same text.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _to_sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _from_sqlite_text
        return super().result_processor(dialect, coltype)


def _to_sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _from_sqlite_text(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class StatusText(TypeDecorator[E], Generic[E]):
    """A status column: stored as its text (a CHECK constraint names the values), read
    back as the enum member, so code compares members, never bare strings."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum
        self._members: dict[str, E] = {member.value: member for member in enum}

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self._members[value]

    # On the hot statements: a dict lookup, not the decorator's processor chain.
    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        members = self._members

        def member(value: Any) -> E | None:
            return None if value is None else members[value]

        return member

    def check(self, column: str = "status") -> str:
        """The CHECK constraint's condition for this column."""
        return f"{column} IN (" + ", ".join(f"'{member.value}'" for member in self.enum) + ")"

"""Statements built once with SQLAlchemy Core, run with named parameters on either engine.

A `Query` is compiled once per engine to SQL text plus the type processors of its
parameters and columns, and run on the raw driver, sqlite3 or asyncpg (see `db.py` for
why): the SQL still comes from the one set of table definitions, and values are
converted by the same SQLAlchemy types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, String, and_, bindparam, or_
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

from imagine.store.types import UTCDateTime

Processor = Callable[[Any], Any]
Row = dict[str, Any]

_SQLITE = sqlite.dialect(paramstyle="qmark")
# `$1` parameters with casts rendered (`$1::VARCHAR`), so PostgreSQL can prepare each
# statement once and asyncpg caches it per connection.
_POSTGRES: Dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    slots: tuple[tuple[str, Processor | None, bool, Any], ...]
    """Each positional parameter: its name, converter, whether the caller gives it, and
    otherwise the literal value the statement carries (already converted)."""
    columns: tuple[str, ...]
    converters: tuple[tuple[str, Processor], ...]
    """The result columns that need converting (timestamps, JSON, booleans)."""

    def parameters(self, given: Mapping[str, Any]) -> list[Any]:
        # Positional binding: sqlite3 looks named parameters up one by one, which costs
        # more than the conversions themselves on wide INSERTs.
        values = []
        for name, convert, required, literal in self.slots:
            if required:
                value = given[name]
                values.append(
                    convert(value) if convert is not None and value is not None else value
                )
            else:
                values.append(literal)
        return values

    def row(self, raw: tuple[Any, ...]) -> Row:
        row = dict(zip(self.columns, raw, strict=True))
        for name, convert in self.converters:
            value = row[name]
            if value is not None:
                row[name] = convert(value)
        return row


def equals_if_given(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column = :name`, or true when the parameter is NULL: an optional filter."""
    given = bindparam(name, type_=String)
    return or_(given.is_(None), column == given)


Cursor = tuple[datetime, str]
"""Where a newest-first page ended: the last row's creation time and id."""
END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
START_OF_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def older_than_cursor(
    created: ColumnElement[Any], ident: ColumnElement[Any]
) -> ColumnElement[bool]:
    """Rows after the cursor `(:before_at, :before_id)` in newest-first order, written as
    a range on `created` so that an index on (created, id) is entered at the cursor
    rather than read from its newest end: a deep page costs what the first one does.
    Both are always given (`cursor_params`)."""
    at = bindparam("before_at", type_=UTCDateTime)
    return and_(created <= at, or_(created < at, ident < bindparam("before_id", type_=String)))


def cursor_params(before: Cursor | None, limit: int) -> dict[str, Any]:
    """The parameters of `older_than_cursor` and the page size; no cursor: every row.
    (`(moment, "")` is "created before `moment`": no id is below the empty string.)"""
    at, ident = before if before is not None else (END_OF_TIME, "")
    return {"before_at": at, "before_id": ident, "limit": limit}


@dataclass(frozen=True, slots=True)
class Batching:
    """How runs of one statement that arrive together may share one round trip
    (PostgreSQL; store/batches.py): the statement answers at most one row per run, and
    that row's `key` columns hold the run's own parameters of those names, so each run
    finds its answer. A write names `order`, a parameter the runs of a batch are sorted
    by, so that two batches take the row locks they share in one order."""

    key: tuple[str, ...]
    order: str | None = None


class Query:
    __slots__ = ("_postgres", "_sqlite", "_sqlite_statement", "batching", "statement")

    def __init__(
        self,
        statement: Executable,
        *,
        sqlite: Executable | None = None,
        batching: Batching | None = None,
    ) -> None:
        """`sqlite`: the form SQLite runs, where its planner needs a different statement.
        `batching`: the statement may run batched with others of its kind (see Batching)
        in a job of one statement."""
        self.statement = statement
        self.batching = batching
        self._sqlite_statement = sqlite if sqlite is not None else statement
        self._sqlite: Compiled | None = None
        self._postgres: Compiled | None = None

    def sqlite(self) -> Compiled:
        if self._sqlite is None:
            self._sqlite = _compile(self._sqlite_statement, _SQLITE)
        return self._sqlite

    def postgres(self) -> Compiled:
        if self._postgres is None:
            self._postgres = _compile(self.statement, _POSTGRES)
        return self._postgres


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _bind(type_: Any, dialect: Dialect) -> Processor | None:
    # JSON columns are on the hot paths; orjson does what the stdlib json module does
    # there several times faster (any valid JSON text reads back the same). Both drivers
    # take and give JSON as text.
    if isinstance(type_, JSON):
        return _json_text
    convert: Processor | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return convert


def _result(type_: Any, dialect: Dialect) -> Processor | None:
    if isinstance(type_, JSON):
        return orjson.loads
    convert: Processor | None = type_.dialect_impl(dialect).result_processor(dialect, None)
    return convert


def _compile(statement: Executable, dialect: Dialect) -> Compiled:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    assert compiled.positiontup is not None
    slots = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        convert = _bind(bind.type, dialect)
        literal = None
        if not bind.required:
            value = bind.effective_value
            literal = convert(value) if convert is not None and value is not None else value
        slots.append((name, convert, bind.required, literal))
    exported: list[ColumnElement[Any]] = list(getattr(statement, "exported_columns", []))
    converters = []
    for column in exported:
        convert = _result(column.type, dialect)
        if convert is not None:
            converters.append((str(column.key), convert))
    return Compiled(
        sql=str(compiled),
        slots=tuple(slots),
        columns=tuple(str(column.key) for column in exported),
        converters=tuple(converters),
    )

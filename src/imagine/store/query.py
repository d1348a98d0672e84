"""Statements built once with SQLAlchemy Core, run with named parameters on either engine.

On PostgreSQL a `Query` runs through SQLAlchemy's async engine as it is. On SQLite it is
compiled once to SQL text plus the type processors of its parameters and columns, and
run on the raw driver (see `db.py` for why): the SQL still comes from the one set of
table definitions, and values are converted by the same SQLAlchemy types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import JSON, String, bindparam, or_
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

Processor = Callable[[Any], Any]
Row = dict[str, Any]

_SQLITE = sqlite.dialect(paramstyle="qmark")


@dataclass(frozen=True, slots=True)
class CompiledSqlite:
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


class Query:
    __slots__ = ("_sqlite", "_sqlite_statement", "statement")

    def __init__(self, statement: Executable, *, sqlite: Executable | None = None) -> None:
        """`sqlite`: the form SQLite runs, where its planner needs a different statement."""
        self.statement = statement
        self._sqlite_statement = sqlite if sqlite is not None else statement
        self._sqlite: CompiledSqlite | None = None

    def sqlite(self) -> CompiledSqlite:
        if self._sqlite is None:
            self._sqlite = _compile_sqlite(self._sqlite_statement)
        return self._sqlite


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _bind(type_: Any) -> Processor | None:
    # JSON columns are on the hot paths; orjson does what the stdlib json module does
    # there several times faster (any valid JSON text reads back the same).
    if isinstance(type_, JSON):
        return _json_text
    convert: Processor | None = type_.dialect_impl(_SQLITE).bind_processor(_SQLITE)
    return convert


def _result(type_: Any) -> Processor | None:
    if isinstance(type_, JSON):
        return orjson.loads
    convert: Processor | None = type_.dialect_impl(_SQLITE).result_processor(_SQLITE, None)
    return convert


def _compile_sqlite(statement: Executable) -> CompiledSqlite:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=_SQLITE)
    assert isinstance(compiled, SQLCompiler)
    assert compiled.positiontup is not None
    slots = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        convert = _bind(bind.type)
        literal = None
        if not bind.required:
            value = bind.effective_value
            literal = convert(value) if convert is not None and value is not None else value
        slots.append((name, convert, bind.required, literal))
    exported: list[ColumnElement[Any]] = list(getattr(statement, "exported_columns", []))
    converters = []
    for column in exported:
        convert = _result(column.type)
        if convert is not None:
            converters.append((str(column.key), convert))
    return CompiledSqlite(
        sql=str(compiled),
        slots=tuple(slots),
        columns=tuple(str(column.key) for column in exported),
        converters=tuple(converters),
    )

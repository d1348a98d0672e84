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
from sqlalchemy import JSON
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

Processor = Callable[[Any], Any]
Row = dict[str, Any]

_SQLITE = sqlite.dialect(paramstyle="named")


@dataclass(frozen=True, slots=True)
class CompiledSqlite:
    sql: str
    defaults: dict[str, Any]
    """Values of the literal parameters the statement carries (already converted)."""
    binds: dict[str, Processor]
    """Converters for the named parameters that need one (timestamps, JSON)."""
    columns: tuple[str, ...]
    results: tuple[Processor | None, ...]

    def parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self.defaults)
        binds = self.binds
        for name, value in given.items():
            convert = binds.get(name)
            values[name] = convert(value) if convert is not None and value is not None else value
        return values

    def row(self, raw: tuple[Any, ...]) -> Row:
        return {
            name: convert(value) if convert is not None else value
            for name, convert, value in zip(self.columns, self.results, raw, strict=True)
        }


class Query:
    __slots__ = ("_sqlite", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._sqlite: CompiledSqlite | None = None

    def sqlite(self) -> CompiledSqlite:
        if self._sqlite is None:
            self._sqlite = _compile_sqlite(self.statement)
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
    binds: dict[str, Processor] = {}
    defaults: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():
        convert = _bind(bind.type)
        if bind.required:
            if convert is not None:
                binds[name] = convert
        else:
            value = bind.effective_value
            defaults[name] = convert(value) if convert is not None and value is not None else value
    exported: list[ColumnElement[Any]] = list(getattr(statement, "exported_columns", []))
    return CompiledSqlite(
        sql=str(compiled),
        defaults=defaults,
        binds=binds,
        columns=tuple(str(column.key) for column in exported),
        results=tuple(
            column.type.dialect_impl(_SQLITE).result_processor(_SQLITE, None) for column in exported
        ),
    )

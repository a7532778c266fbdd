"""Hot statements run on the driver connection, compiled once per database.

A repository call that SQLAlchemy executes pays for its whole execution machinery (events,
the compiled cache lookup, parameter construction, the result object) on every call: on
SQLite that is several times what the driver itself takes to run the statement. A
``Prepared`` statement is compiled once, with SQLAlchemy, for the database's dialect, and keeps
what running it needs: the SQL text, the order of its parameters and the type conversions of
its parameters and result columns (the same ``TypeDecorator`` code SQLAlchemy would run). Only
fixed statements qualify: no expanding ``IN`` lists, nothing rendered at execution time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

_Processor = Callable[[Any], Any]


class PreparedRow(dict[str, Any]):
    """One result row: a mapping of column key to value, readable as attributes too (like
    SQLAlchemy's ``Row``, so repositories treat both alike)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> Mapping[str, Any]:
        return self


class Prepared:
    """``stmt`` compiled for ``dialect``, ready to run on a DBAPI cursor."""

    __slots__ = ("_binds", "_defaults", "_keys", "_names", "_results", "sql")

    def __init__(self, stmt: sa.ClauseElement, dialect: Dialect, keys: list[str]) -> None:
        """``keys``: the parameters it will be given (an INSERT's columns)."""
        compiled: Any = stmt.compile(dialect=dialect, column_keys=keys)
        binds = compiled.binds
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a prepared statement has no parameters rendered at execution")
        if any(bind.expanding or bind.callable is not None for bind in binds.values()):
            raise ValueError("a prepared statement has only fixed parameters")
        self.sql = compiled.string
        # qmark (SQLite) takes a tuple in this order; pyformat (psycopg) a dict by name.
        self._names = tuple(compiled.positiontup) if dialect.positional else None
        self._defaults = {name: bind.value for name, bind in binds.items() if not bind.required}
        self._binds = tuple(compiled._bind_processors.items())
        self._keys = tuple(column.keyname for column in compiled._result_columns)
        self._results = tuple(
            (i, processor)
            for i, column in enumerate(compiled._result_columns)
            if (processor := column.type._cached_result_processor(dialect, None)) is not None
        )

    def parameters(self, given: Mapping[str, Any]) -> Any:
        """The driver's parameters for ``given`` (by bind name), converted as SQLAlchemy would."""
        values = {**self._defaults, **given} if self._defaults else dict(given)
        for name, processor in self._binds:
            values[name] = processor(values[name])
        if self._names is None:
            return values
        return tuple(values[name] for name in self._names)

    def row(self, values: tuple[Any, ...] | list[Any]) -> PreparedRow:
        """A fetched driver row as a ``PreparedRow``, its columns converted."""
        if self._results:
            values = list(values)
            for i, processor in self._results:
                values[i] = processor(values[i])
        return PreparedRow(zip(self._keys, values, strict=True))

"""Column types that give both databases the same values.

- ``UTCDateTime``: ``timestamptz`` on PostgreSQL; on SQLite fixed-width ISO 8601 text in UTC
  (``compozy.core.values.format_timestamp``), so that text order is time order and microseconds
  round-trip exactly.
- ``JSONValue``: ``jsonb`` on PostgreSQL; on SQLite compact JSON text (CHECKed by
  ``json_valid`` in the schema).
- ``Identifier``: text compared byte-wise on both (``COLLATE "C"`` on PostgreSQL), so ordering
  by id ties gives the same order as SQLite's BINARY collation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from compozy.core.values import check_timestamp, format_timestamp, parse_timestamp

T = TypeVar("T")


class _PerDialect(sa.TypeDecorator[T]):
    """A type that each database stores as ``stored_as`` says (by SQLAlchemy dialect name:
    ``sqlite``, ``postgresql``), and any other as ``impl``. A subclass sets ``cache_ok = True``
    itself: SQLAlchemy looks for it on each class, not on its bases."""

    stored_as: ClassVar[Mapping[str, TypeEngine[Any]]] = {}

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return self.stored_as.get(dialect.name, self.impl_instance)


class UTCDateTime(_PerDialect[datetime]):
    """An aware UTC datetime; naive values are refused before they reach a driver."""

    impl = sa.DateTime(timezone=True)
    stored_as = {"sqlite": sa.Text()}
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = check_timestamp(value, "timestamp")
        return format_timestamp(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_timestamp(value)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


def json_text(value: Any) -> str:
    """Compact JSON text whose numbers come back as equal Python values from both databases.

    PostgreSQL's jsonb keeps numbers as ``numeric`` and prints them without an exponent, so
    ``1.5e+300`` would come back as an int that is not equal to the float. Integral floats
    written with an exponent are therefore spelled out in full with ``.0``: exact, and read back
    as the same float. Everything else is what ``json.dumps`` writes.
    """
    if not _has_wide_integral_float(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _encode(value)


def _has_wide_integral_float(value: Any) -> bool:
    # On every JSON write: the common leaves (str, int, None, bool) are skipped without a call.
    if isinstance(value, float):
        return value.is_integer() and "e" in repr(value)
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if _has_wide_integral_float(item):
            return True
    return False


def _encode(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and "e" in repr(value):
        return f"{int(value)}.0"
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


class JSONValue(_PerDialect[Any]):
    """A JSON document; Python None is SQL NULL."""

    impl = sa.JSON(none_as_null=True)
    stored_as = {"sqlite": sa.Text(), "postgresql": postgresql.JSONB(none_as_null=True)}
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return json_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return json.loads(value)


class Identifier(_PerDialect[str]):
    """An id: text ordered by code point on both databases."""

    impl = sa.Text()
    stored_as = {"postgresql": sa.Text(collation="C")}
    cache_ok = True

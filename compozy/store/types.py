"""Column types that give both databases the same values (SPEC 1.3).

- ``UTCDateTime``: ``timestamptz`` on PostgreSQL; on SQLite fixed-width ISO 8601 text in UTC,
  so that text order is time order and microseconds round-trip exactly.
- ``JSONValue``: ``jsonb`` on PostgreSQL; on SQLite compact JSON text (CHECKed by
  ``json_valid`` in the schema).
- ``Identifier``: text compared byte-wise on both (``COLLATE "C"`` on PostgreSQL), so ordering
  by id ties gives the same order as SQLite's BINARY collation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from compozy.core.values import check_timestamp

_TIME_FORMAT_LENGTH = len("2000-01-01T00:00:00.000000Z")


def format_timestamp(value: datetime) -> str:
    """Fixed-width UTC text: four-digit year, microseconds always present, ``Z`` suffix."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    """Inverse of ``format_timestamp``."""
    if len(text) != _TIME_FORMAT_LENGTH or not text.endswith("Z"):
        raise ValueError(f"stored timestamp {text!r} is not in compozy's fixed-width format")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime; naive values are refused before they reach a driver."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

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


class JSONValue(sa.TypeDecorator[Any]):
    """A JSON document; Python None is SQL NULL."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return json.loads(value)


class Identifier(sa.TypeDecorator[str]):
    """An id: text ordered by code point on both databases."""

    impl = sa.Text()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Text(collation="C"))
        return dialect.type_descriptor(sa.Text())

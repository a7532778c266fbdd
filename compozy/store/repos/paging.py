"""Keyset paging, newest first on (created_at, id), with an opaque cursor.

A page reads ``limit + 1`` rows after the cursor's position in the index order, so page 1,000
costs what page 1 costs, and rows inserted while a client pages (newer, so before its position)
never make an old row appear twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from compozy.core.paging import Page, check_limit
from compozy.core.values import check_timestamp
from compozy.errors import ValidationError
from compozy.store.types import UTCDateTime

_BAD_CURSOR = "cursor {cursor!r} is not one this server gave out; start again without a cursor"


def encode_cursor(created_at: datetime, key: str) -> str:
    """The cursor that reads the rows after (``created_at``, ``key``) in newest-first order."""
    raw = json.dumps([created_at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for; ``ValidationError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = json.loads(raw)
        when = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValidationError(_BAD_CURSOR.format(cursor=cursor)) from None
    if when.tzinfo is None or not isinstance(key, str) or not key:
        raise ValidationError(_BAD_CURSOR.format(cursor=cursor))
    try:
        # An instant outside years 1-9999 in UTC (year 1 at +05:00) cannot be compared.
        when = check_timestamp(when, "cursor")
    except ValidationError:
        raise ValidationError(_BAD_CURSOR.format(cursor=cursor)) from None
    return when, key


def read_page(
    conn: Connection,
    stmt: sa.Select[Any],
    key: sa.Column[str],
    *,
    limit: int,
    cursor: str | None,
) -> Page[Row[Any]]:
    """The page of ``stmt``'s rows, newest first on (``created_at``, ``key``) of the table of
    ``key``, after ``cursor``: at most ``limit`` rows and the next cursor."""
    limit = check_limit(limit)
    created_at = key.table.c.created_at
    if cursor is not None:
        if not isinstance(cursor, str):
            raise ValidationError(_BAD_CURSOR.format(cursor=cursor))
        at, last = decode_cursor(cursor)
        # A row-value comparison: both databases read it as a range of the (created_at, id)
        # index, where the equivalent OR of two conditions scans everything before the cursor.
        position = sa.tuple_(sa.literal(at, UTCDateTime()), sa.literal(last, key.type))
        stmt = stmt.where(sa.tuple_(created_at, key) < position)
    # One row more than the page shows says whether another page follows.
    rows = list(conn.execute(stmt.order_by(created_at.desc(), key.desc()).limit(limit + 1)))
    shown = rows[:limit]
    next_cursor = None
    if len(rows) > limit and shown:
        last_shown = shown[-1]._mapping
        next_cursor = encode_cursor(last_shown[created_at], last_shown[key])
    return Page(shown, next_cursor)

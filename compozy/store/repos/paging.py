"""Keyset paging, newest first on (created_at, id), with an opaque cursor.

A page reads ``limit + 1`` rows after the cursor's position in the index order, so page 1,000
costs what page 1 costs, and rows inserted while a client pages (newer, so before its position)
never make an old row appear twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Row

from compozy.core.paging import Page, check_limit
from compozy.errors import ValidationError
from compozy.store.types import UTCDateTime

T = TypeVar("T")

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
    return when, key


def keyset(
    stmt: sa.Select[Any],
    created_at: sa.ColumnElement[datetime],
    key: sa.ColumnElement[str],
    *,
    limit: int,
    cursor: str | None,
) -> sa.Select[Any]:
    """``stmt`` ordered newest first, after ``cursor``, reading one row more than ``limit``."""
    limit = check_limit(limit)
    if cursor is not None:
        if not isinstance(cursor, str):
            raise ValidationError(_BAD_CURSOR.format(cursor=cursor))
        at, last = decode_cursor(cursor)
        # A row-value comparison: both databases read it as a range of the (created_at, id)
        # index, where the equivalent OR of two conditions scans everything before the cursor.
        position = sa.tuple_(sa.literal(at, UTCDateTime()), sa.literal(last, key.type))
        stmt = stmt.where(sa.tuple_(created_at, key) < position)
    return stmt.order_by(created_at.desc(), key.desc()).limit(limit + 1)


def page_of(
    rows: Sequence[Row[Any]],
    limit: int,
    position: Callable[[Row[Any]], tuple[datetime, str]],
    build: Callable[[list[Row[Any]]], list[T]],
) -> Page[T]:
    """The page for rows read by ``keyset``: at most ``limit`` items and the next cursor."""
    shown = list(rows[:limit])
    more = len(rows) > limit
    next_cursor = encode_cursor(*position(shown[-1])) if more and shown else None
    return Page(build(shown), next_cursor)

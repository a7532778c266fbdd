"""Checks that a value can be stored identically on PostgreSQL and SQLite.

They run before any SQL, so a refused value never reaches a driver and both backends refuse
the same inputs with the same ``ValidationError``. The one text form of a timestamp
(``format_timestamp`` / ``parse_timestamp``) lives here too, for every layer to share.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from compozy.errors import ValidationError

E = TypeVar("E", bound=Enum)

MAX_ID_LENGTH = 255

MAX_JSON_DEPTH = 64
"""How deeply objects and arrays may nest in a stored JSON value (``{}`` is one level), on
both databases and in the API. No workflow needs more, and deeper documents would recurse in
the drivers' encoders (a ``RecursionError`` from about 330 levels)."""

MAX_LEASE = 86_400.0
"""The longest lease, in seconds, a worker may hold an execution for without renewing it (a
day; workers renew every ``runtime.poll_interval``). Longer ones would also reach past year
9999 on the way."""

MAX_TREE_DEPTH = 1000
"""The largest ``max_depth`` that ``get_task_tree`` takes: far deeper than any task nesting,
and a bound on the work a tree whose parent links form a cycle can cost."""


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def check_timestamp(value: Any, field: str) -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes and non-datetimes."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{field} is a naive datetime: pass a timezone-aware one, e.g. datetime.now(UTC)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00+05:30, which is in year 0 in UTC
        raise ValidationError(
            f"{field} is {value.isoformat()}, which is outside years 1-9999 in UTC"
        ) from None


TIMESTAMP_EXAMPLE = "2000-01-01T00:00:00.000000Z"
"""What ``format_timestamp`` writes: ISO 8601 in UTC, always this width."""

_TIMESTAMP_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", re.ASCII
)


def format_timestamp(value: datetime, field: str = "timestamp") -> str:
    """The one text form of a timestamp: UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, fixed width.

    Every year 1-9999 has four digits and microseconds always six, so text order is time
    order. SQLite stores this text, and the API, the CLI and the usage JSON show it. Aware
    datetimes in other zones come out as the same instant in UTC; naive ones are refused with
    a ``ValidationError`` naming ``field``.
    """
    v = check_timestamp(value, field)
    # Not strftime: its %Y gives "5" for year 5 on glibc, which would break the fixed width.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    """Inverse of ``format_timestamp``: an aware UTC datetime; ``ValueError`` for other text.

    Only the exact fixed-width form is accepted, so what was read is what was written.
    """
    if not isinstance(text, str) or _TIMESTAMP_TEXT.fullmatch(text) is None:
        raise ValueError(
            f"timestamp {text!r} is not in compozy's fixed-width format {TIMESTAMP_EXAMPLE}"
        )
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a valid date and time") from None


def read_timestamp(text: Any, field: str) -> datetime:
    """A timestamp given as text from outside (a tool, stored JSON): any ISO 8601 date-time
    with a UTC offset or ``Z``, ``format_timestamp``'s form included; returned in UTC.

    ``ValidationError`` naming ``field`` for non-strings, text without an offset and anything
    else that is not ISO 8601.
    """
    if not isinstance(text, str):
        raise ValidationError(f"{field} must be an ISO 8601 timestamp string")
    try:
        if _TIMESTAMP_TEXT.fullmatch(text) is not None:
            return parse_timestamp(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{field} {text!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise ValidationError(
            f"{field} {text!r} has no UTC offset (a naive time): end it with Z or +HH:MM"
        )
    return check_timestamp(value, field)


def check_optional_timestamp(value: Any, field: str) -> datetime | None:
    """Like ``check_timestamp`` but lets None through."""
    return None if value is None else check_timestamp(value, field)


def check_text(value: Any, field: str, *, allow_empty: bool = False) -> str:
    """Refuse non-strings, empty strings (unless allowed) and U+0000, which PostgreSQL refuses."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValidationError(f"{field} is empty: give it a value")
    _check_storable(value, field)
    return value


def _check_storable(text: str, field: str) -> None:
    if "\x00" in text:
        raise ValidationError(f"{field} contains the character U+0000, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{field} contains a lone surrogate (not valid Unicode), which cannot be stored"
        ) from None


def check_optional_text(value: Any, field: str) -> str | None:
    """Like ``check_text`` but lets None through."""
    return None if value is None else check_text(value, field)


def check_id(value: Any, field: str) -> str:
    """An identifier: a non-empty string of at most 255 characters without U+0000."""
    text = check_text(value, field)
    if len(text) > MAX_ID_LENGTH:
        raise ValidationError(f"{field} is {len(text)} characters long; the limit is 255")
    return text


def check_optional_id(value: Any, field: str) -> str | None:
    """Like ``check_id`` but lets None through."""
    return None if value is None else check_id(value, field)


def check_enum(enum: type[E], value: Any, field: str) -> E:
    """Coerce ``value`` (the enum or its value) to ``enum`` or name the allowed values."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in enum)
        raise ValidationError(f"{field} is {value!r}; allowed values: {allowed}") from None


def check_json(value: Any, field: str) -> Any:
    """Refuse what either database cannot store as JSON: NaN, infinities, U+0000, non-JSON
    types, and nesting deeper than ``MAX_JSON_DEPTH``.

    Returns the value unchanged so a caller can write ``x = check_json(x, "input")``.
    """
    _walk_json(value, field)
    return value


def check_json_object(value: Any, field: str) -> dict[str, Any] | None:
    """A JSON object (dict) or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(
            f"{field} must be a JSON object (dict) or None, got {type(value).__name__}"
        )
    _walk_json(value, field)
    return value


def parse_json(text: str, field: str) -> Any:
    """Parse JSON text given from outside (a flag, a file) into a value ``check_json`` accepts;
    ``ValidationError`` naming ``field`` for text that is not JSON, holds NaN or infinities,
    or nests deeper than ``MAX_JSON_DEPTH``, never a ``RecursionError``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{field} is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None
    except RecursionError:
        raise ValidationError(_too_deep(field)) from None
    return check_json(value, field)


def _too_deep(field: str) -> str:
    return (
        f"{field} is nested too deeply: its objects and arrays nest deeper than {MAX_JSON_DEPTH} "
        "levels, the limit for stored JSON; flatten it"
    )


def _walk_json(value: Any, field: str) -> None:
    # Iterative, so a document of any depth is refused with a message, not a RecursionError.
    # bool is an int subclass and both are fine; check the exact containers so that tuples,
    # sets and custom mappings (which would not round-trip as equal values) are refused.
    pending: list[tuple[Any, str, int]] = [(value, field, 0)]
    while pending:
        item, path, depth = pending.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(
                    f"{path} is {item!r}; JSON cannot store NaN or infinite numbers"
                )
            continue
        if isinstance(item, str):
            _check_storable(item, path)
            continue
        if type(item) is list:
            _check_depth(depth, field)
            children = [(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item)]
        elif type(item) is dict:
            _check_depth(depth, field)
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValidationError(
                        f"{path} has the key {key!r}; JSON object keys must be strings"
                    )
                _check_storable(key, f"{path} key")
                children.append((child, f"{path}.{key}", depth + 1))
        else:
            raise ValidationError(
                f"{path} holds a {type(item).__name__}; only dict, list, str, int, float, bool "
                "and None can be stored as JSON"
            )
        # Reversed, so the first problem in document order is the one reported.
        pending.extend(reversed(children))


def _check_depth(depth: int, field: str) -> None:
    """``depth`` objects and arrays enclose this one: refuse it if it is one too many."""
    if depth == MAX_JSON_DEPTH:
        raise ValidationError(_too_deep(field))


def check_tree_depth(value: Any, field: str = "max_depth") -> int:
    """A depth limit for a task tree: a whole number from 0 to ``MAX_TREE_DEPTH``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_DEPTH:
        raise ValidationError(
            f"{field} is {value!r}; pass a whole number from 0 to {MAX_TREE_DEPTH}"
        )
    return value

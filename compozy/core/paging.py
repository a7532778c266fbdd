"""Pages of a list read in keyset order: the items and an opaque cursor for the next page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from compozy.errors import ValidationError

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: ``next_cursor`` reads the page after it, None when this is the last page."""

    items: list[T]
    next_cursor: str | None


def check_limit(value: Any, field: str = "limit") -> int:
    """A page size: an int from 1 to ``MAX_PAGE_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValidationError(
            f"{field} is {value!r}; give a whole number from 1 to {MAX_PAGE_SIZE}"
        )
    return value

"""Identifiers, enumerations and value checks shared by every entity (no I/O)."""

from compozy.core.enums import (
    FAILED_STATUSES,
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Component,
    ExecutionType,
    Role,
    Status,
)
from compozy.core.ids import new_id, parse_id
from compozy.core.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from compozy.core.values import format_timestamp, parse_timestamp, read_timestamp, utc_now

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "FAILED_STATUSES",
    "MAX_PAGE_SIZE",
    "RUNNING_STATUSES",
    "TERMINAL_STATUSES",
    "Component",
    "ExecutionType",
    "Page",
    "Role",
    "Status",
    "format_timestamp",
    "new_id",
    "parse_id",
    "parse_timestamp",
    "read_timestamp",
    "utc_now",
]

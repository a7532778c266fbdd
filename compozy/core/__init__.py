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
from compozy.core.values import utc_now

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
    "new_id",
    "parse_id",
    "utc_now",
]

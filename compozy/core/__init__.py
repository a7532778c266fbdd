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
from compozy.core.values import (
    MAX_JSON_DEPTH,
    MAX_TREE_DEPTH,
    format_timestamp,
    parse_json,
    parse_timestamp,
    read_timestamp,
    utc_now,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "FAILED_STATUSES",
    "MAX_JSON_DEPTH",
    "MAX_PAGE_SIZE",
    "MAX_TREE_DEPTH",
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
    "parse_json",
    "parse_timestamp",
    "read_timestamp",
    "utc_now",
]

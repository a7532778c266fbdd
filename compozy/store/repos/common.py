"""Helpers shared by the repositories: row mapping, batching, monotonic timestamps, usage."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compozy.core.values import check_id, utc_now
from compozy.errors import NotFoundError
from compozy.store.database import Database
from compozy.store.drivers.base import Driver, iter_batches
from compozy.store.prepared import PreparedRow
from compozy.store.tables import task_states
from compozy.store.types import UTCDateTime
from compozy.task import ExecutionState, TaskState
from compozy.usage import UsageSummary

E = TypeVar("E")

TASK_ORDER = (task_states.c.created_at.asc(), task_states.c.task_exec_id.asc())


class Repository:
    """Base of the three repositories: a database and, optionally, one bound transaction."""

    def __init__(self, db: Database, bound: Connection | None = None) -> None:
        self._db = db
        self._bound = bound

    def _read(self, *, single: bool = False) -> Any:
        """A unit for a read; ``single``: it is one statement, so it needs no transaction."""
        return self._db.unit(write=False, bound=self._bound, single=single)

    def _select(self, stmt: sa.ClauseElement, params: dict[str, Any]) -> list[PreparedRow]:
        """The rows of a read that is one fixed statement (``Database.select``)."""
        return self._db.select(stmt, params, self._bound)

    def _write_fixed(self) -> Any:
        """A unit for a write of fixed statements only (``Database.write_unit``)."""
        return self._db.write_unit(self._bound)

    def _write(self, need_transaction: str = "") -> Any:
        return self._db.unit(write=True, bound=self._bound, need_transaction=need_transaction)


def now_param(now: datetime | None = None) -> sa.BindParameter[datetime]:
    """The ``now`` parameter, typed as a UTC timestamp (so SQLite compares it as text)."""
    return sa.bindparam("now", now, type_=UTCDateTime())


def not_before(column: sa.ColumnElement[Any], new: sa.ColumnElement[Any]) -> sa.Case[Any]:
    """SQL for ``max(column, new)``: a timestamp that never moves backwards."""
    return sa.case((column.is_not(None) & (column > new), column), else_=new)


def usage_value(summary: UsageSummary | None) -> list[dict[str, Any]] | None:
    """The stored JSON for a summary; an empty summary is stored as NULL."""
    return None if summary is None or summary.is_empty() else summary.to_json()


def usage_from(value: Any) -> UsageSummary | None:
    """The summary for a stored JSON array, None for NULL."""
    return None if value is None else UsageSummary.from_stored(value)


_MAPPED: dict[tuple[type[Any], str], tuple[str, ...]] = {}


def mapped_columns(entity: type[Any], table: sa.Table) -> tuple[str, ...]:
    """The fields of a dataclass ``entity`` that are columns of ``table``, in field order: the
    entity's fields drive the row mapping, so a new column is an edit in the domain and one in
    tables.py (and the migration), not in every repository."""
    key = (entity, table.name)
    found = _MAPPED.get(key)
    if found is None:
        found = _MAPPED[key] = tuple(
            f.name for f in dataclasses.fields(entity) if f.name in table.c
        )
    return found


def row_values(entity: Any, table: sa.Table) -> dict[str, Any]:
    """The mapped fields of ``entity`` as ``table`` stores them: enums by value, a usage summary
    as its JSON array (NULL when empty)."""
    values: dict[str, Any] = {}
    for name in mapped_columns(type(entity), table):
        value = getattr(entity, name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, UsageSummary):
            value = usage_value(value)
        values[name] = value
    return values


def upsert_values(state: ExecutionState, table: sa.Table) -> dict[str, Any]:
    """``row_values`` of ``state``, once validated, for an upsert: ``created_at`` stays what it is
    (now when unset), ``updated_at`` is now."""
    state.validate()
    now = utc_now()
    values = row_values(state, table)
    values.update(created_at=state.created_at or now, updated_at=now)
    return values


def from_row(entity: type[E], table: sa.Table, row: Any, **extra: Any) -> E:
    """Build ``entity`` from a row of ``table`` (plus ``extra`` fields that are not columns)."""
    m = row._mapping
    fields = {name: m[name] for name in mapped_columns(entity, table)}
    if "usage" in fields:
        fields["usage"] = usage_from(fields["usage"])
    return entity(**fields, **extra)


def task_from_row(row: Any) -> TaskState:
    """Build a ``TaskState`` from a ``task_states`` row."""
    return from_row(TaskState, task_states, row)


def latest_by_task_id(tasks: Iterable[TaskState]) -> dict[str, TaskState]:
    """task_id -> the last state in ``tasks`` (which come in created_at, task_exec_id order)."""
    return {task.task_id: task for task in tasks}


TASKS_OF_EXECUTIONS = (
    sa.select(task_states)
    .where(task_states.c.workflow_exec_id.in_(sa.bindparam("exec_ids", expanding=True)))
    .order_by(*TASK_ORDER)
)
TASKS_OF_EXECUTION = (
    sa.select(task_states)
    .where(task_states.c.workflow_exec_id == sa.bindparam("exec_id"))
    .order_by(*TASK_ORDER)
)


def tasks_of_executions(
    db: Database, conn: Connection, exec_ids: Sequence[str]
) -> dict[str, list[TaskState]]:
    """workflow_exec_id -> its task states in task order, fetched in batches."""
    if len(exec_ids) == 1:  # the common case, as a fixed statement
        rows = db.fetch(conn, TASKS_OF_EXECUTION, {"exec_id": exec_ids[0]})
        return {exec_ids[0]: [task_from_row(row) for row in rows]}
    found: dict[str, list[TaskState]] = {exec_id: [] for exec_id in exec_ids}
    for batch in iter_batches(list(found), db.driver.max_bind_params):
        for row in conn.execute(TASKS_OF_EXECUTIONS, {"exec_ids": batch}):
            found[row.workflow_exec_id].append(task_from_row(row))
    return found


def merge_usage_into(
    repo: Repository,
    table: sa.Table,
    key_column: sa.Column[Any],
    key: str,
    summary: UsageSummary | None,
    not_found: Callable[[str], NotFoundError],
) -> UsageSummary | None:
    """Read, merge and write a row's usage in one locked write transaction (no lost update)."""
    key = check_id(key, key_column.name)
    if summary is None:
        return None
    summary.validate()
    if summary.is_empty():
        return None
    read, write = repo._db.statement(
        f"merge_usage_{table.name}", lambda d: _merge_usage_statements(d, table, key_column)
    )
    db = repo._db
    with repo._write_fixed() as conn:
        rows = db.fetch(conn, read, {"key": key})
        if not rows:
            raise not_found(key)
        stored = usage_from(rows[0].usage)
        # ``summary`` was validated above and ``stored`` was just built: nothing to re-check.
        merged = UsageSummary.of_checked([*(stored.entries if stored else ()), *summary.entries])
        db.run(conn, write, {"key": key, "merged": usage_value(merged), "now": utc_now()})
    return merged


def _merge_usage_statements(
    driver: Driver, table: sa.Table, key_column: sa.Column[Any]
) -> tuple[Any, Any]:
    key: sa.BindParameter[str] = sa.bindparam("key")
    read = driver.for_update(sa.select(table.c.usage).where(key_column == key))
    write = (
        sa.update(table)
        .where(key_column == key)
        .values(
            usage=sa.bindparam("merged", type_=table.c.usage.type),
            updated_at=not_before(table.c.updated_at, now_param()),
        )
    )
    return read, write

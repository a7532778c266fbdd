"""Helpers shared by the repositories: row mapping, batching, monotonic timestamps, usage."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from compozy.core.values import check_id, utc_now
from compozy.errors import NotFoundError
from compozy.store.database import Database
from compozy.store.dialects.base import Dialect, iter_batches
from compozy.store.tables import task_states
from compozy.store.types import UTCDateTime
from compozy.task import TaskState
from compozy.usage import UsageSummary

TASK_ORDER = (task_states.c.created_at.asc(), task_states.c.task_exec_id.asc())


class Repository:
    """Base of the three repositories: a database and, optionally, one bound transaction."""

    def __init__(self, db: Database, bound: Connection | None = None) -> None:
        self._db = db
        self._bound = bound

    def _read(self) -> Any:
        return self._db.unit(write=False, bound=self._bound)

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
    return None if value is None else UsageSummary.from_json(value)


def task_from_row(row: Row[Any]) -> TaskState:
    """Build a ``TaskState`` from a ``task_states`` row."""
    m = row._mapping
    return TaskState(
        task_exec_id=m["task_exec_id"],
        task_id=m["task_id"],
        workflow_id=m["workflow_id"],
        workflow_exec_id=m["workflow_exec_id"],
        parent_state_id=m["parent_state_id"],
        component=m["component"],
        status=m["status"],
        execution_type=m["execution_type"],
        agent_id=m["agent_id"],
        action_id=m["action_id"],
        tool_id=m["tool_id"],
        usage=usage_from(m["usage"]),
        input=m["input"],
        output=m["output"],
        error=m["error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def latest_by_task_id(tasks: Iterable[TaskState]) -> dict[str, TaskState]:
    """task_id -> the last state in ``tasks`` (which come in created_at, task_exec_id order)."""
    return {task.task_id: task for task in tasks}


_TASKS_OF_EXECUTIONS = (
    sa.select(task_states)
    .where(task_states.c.workflow_exec_id.in_(sa.bindparam("exec_ids", expanding=True)))
    .order_by(*TASK_ORDER)
)


def tasks_of_executions(
    db: Database, conn: Connection, exec_ids: Sequence[str]
) -> dict[str, list[TaskState]]:
    """workflow_exec_id -> its task states in task order, fetched in batches."""
    found: dict[str, list[TaskState]] = {exec_id: [] for exec_id in exec_ids}
    for batch in iter_batches(list(found), db.dialect.max_bind_params):
        for row in conn.execute(_TASKS_OF_EXECUTIONS, {"exec_ids": batch}):
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
    with repo._write() as conn:
        row = conn.execute(read, {"key": key}).first()
        if row is None:
            raise not_found(key)
        stored = usage_from(row.usage)
        merged = summary.merge(None) if stored is None else stored.merge(summary)
        conn.execute(write, {"key": key, "merged": usage_value(merged), "now": utc_now()})
    return merged


def _merge_usage_statements(
    dialect: Dialect, table: sa.Table, key_column: sa.Column[Any]
) -> tuple[Any, Any]:
    key: sa.BindParameter[str] = sa.bindparam("key")
    read = dialect.for_update(sa.select(table.c.usage).where(key_column == key))
    write = (
        sa.update(table)
        .where(key_column == key)
        .values(
            usage=sa.bindparam("merged", type_=table.c.usage.type),
            updated_at=not_before(table.c.updated_at, now_param()),
        )
    )
    return read, write

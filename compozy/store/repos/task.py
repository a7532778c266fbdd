"""``TaskRepository`` on SQLAlchemy Core, one implementation for both databases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from compozy.core import Status
from compozy.core.values import check_enum, check_id, check_tree_depth
from compozy.errors import ConstraintViolation, TaskNotFound
from compozy.store.drivers.base import Driver, ForeignKeyViolation
from compozy.store.prepared import PreparedRow
from compozy.store.repos.common import (
    TASK_ORDER,
    TASKS_OF_EXECUTION,
    Repository,
    latest_by_task_id,
    mapped_columns,
    merge_usage_into,
    not_before,
    task_from_row,
    upsert_values,
    usage_from,
)
from compozy.store.tables import task_states, workflow_states
from compozy.task import ProgressInfo, TaskFilter, TaskState
from compozy.usage import UsageSummary

_T = task_states.c
# Written by an upsert: every mapped field but the key and created_at (kept) and updated_at.
_UPDATABLE = tuple(
    name
    for name in mapped_columns(TaskState, task_states)
    if name not in ("task_exec_id", "created_at", "updated_at")
)


_BY_ID = sa.select(task_states).where(_T.task_exec_id == sa.bindparam("task_exec_id"))
_USAGE_BY_ID = sa.select(_T.usage).where(_T.task_exec_id == sa.bindparam("task_exec_id"))
_CHILDREN = (
    sa.select(task_states).where(_T.parent_state_id == sa.bindparam("parent")).order_by(*TASK_ORDER)
)


def _not_found(task_exec_id: str) -> TaskNotFound:
    return TaskNotFound(f"task execution {task_exec_id} not found")


def _by_ids(driver: Driver) -> Any:
    # Python orders str by code point, as SQLite's BINARY and PostgreSQL's "C" collation do.
    return (
        sa.select(task_states).where(driver.in_list(_T.task_exec_id, "ids")).order_by(*TASK_ORDER)
    )


def _upsert_many_statement(driver: Driver) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE of every column but created_at; values come as params."""
    insert = driver.insert(task_states)
    updated: dict[str, Any] = {name: insert.excluded[name] for name in _UPDATABLE}
    updated["updated_at"] = not_before(_T.updated_at, insert.excluded.updated_at)
    return insert.on_conflict_do_update(index_elements=[_T.task_exec_id], set_=updated)


def _upsert_statement(driver: Driver) -> Any:
    """The upsert, returning the stored row."""
    return _upsert_many_statement(driver).returning(*task_states.c)


class SqlTaskRepository(Repository):
    """Task executions and their parent/child trees."""

    def _list(self, *conditions: sa.ColumnElement[bool]) -> list[TaskState]:
        stmt = sa.select(task_states).where(*conditions).order_by(*TASK_ORDER)
        with self._read(single=True) as conn:
            return [task_from_row(row) for row in conn.execute(stmt)]

    def list_states(self, filter: TaskFilter | None = None) -> list[TaskState]:
        conditions = filter.conditions() if filter is not None else {}
        if conditions.keys() == {"workflow_exec_id"}:  # the hot one, as a fixed statement
            params = {"exec_id": conditions["workflow_exec_id"]}
            return [task_from_row(row) for row in self._select(TASKS_OF_EXECUTION, params)]
        return self._list(*(_T[name] == value for name, value in conditions.items()))

    def list_by_ids(self, ids: list[str]) -> list[TaskState]:
        wanted = list(dict.fromkeys(check_id(i, "task_exec_id") for i in ids))
        if not wanted:
            return []
        stmt = self._db.statement("tasks_by_ids", _by_ids)
        return [task_from_row(row) for row in self._select(stmt, {"ids": wanted})]

    def upsert_state(self, state: TaskState) -> TaskState:
        values = upsert_values(state, task_states)
        stmt = self._db.statement("task_upsert", _upsert_statement)
        try:
            with self._write_fixed() as conn:
                return task_from_row(self._db.fetch(conn, stmt, values)[0])
        except ForeignKeyViolation:
            raise self._missing_reference([state]) from None

    def upsert_states(self, states: list[TaskState], *, returning: bool = True) -> list[TaskState]:
        """``upsert_state`` of each state in order, all or none, sent as one batch (the
        driver's executemany: one round trip on PostgreSQL's pipeline). With ``returning``,
        the stored states of the distinct ids, in the order each id first appears; without,
        nothing is read back. The store's own (not in the repository protocol): the engine
        stores a run's queued task changes with it."""
        rows = [upsert_values(state, task_states) for state in states]
        if not rows:
            return []
        stmt = self._db.statement("task_upsert_many", _upsert_many_statement)
        try:
            with self._write_fixed() as conn:
                self._db.run_many(conn, stmt, rows)
                if not returning:
                    return []
                ids = list(dict.fromkeys(row["task_exec_id"] for row in rows))
                found = self._db.fetch(
                    conn, self._db.statement("tasks_by_ids", _by_ids), {"ids": ids}
                )
        except ForeignKeyViolation:
            raise self._missing_reference(states) from None
        by_id = {row.task_exec_id: task_from_row(row) for row in found}
        return [by_id[i] for i in ids]

    def _missing_reference(self, states: list[TaskState]) -> ConstraintViolation:
        """Say which reference of which state does not exist (SQLite does not tell); a parent
        stored earlier in the same batch counts as existing."""
        earlier: set[str] = set()
        with self._read() as conn:
            for state in states:
                has_workflow = conn.execute(
                    sa.select(sa.literal(1)).where(
                        workflow_states.c.workflow_exec_id == state.workflow_exec_id
                    )
                ).first()
                if has_workflow is None:
                    return ConstraintViolation(
                        f"task {state.task_exec_id} refers to workflow execution "
                        f"{state.workflow_exec_id}, which does not exist: store the workflow "
                        "first"
                    )
                parent = state.parent_state_id
                if parent is not None and parent not in earlier:
                    has_parent = conn.execute(
                        sa.select(sa.literal(1)).where(_T.task_exec_id == parent)
                    ).first()
                    if has_parent is None:
                        break
                earlier.add(state.task_exec_id)
            else:  # pragma: no cover - the database refused a reference that exists
                return ConstraintViolation("a task refers to a row that does not exist")
        return ConstraintViolation(
            f"task {state.task_exec_id} refers to parent task {state.parent_state_id}, "
            "which does not exist: store the parent first"
        )

    def _row_by_id(self, stmt: sa.Select[Any], task_exec_id: str, *, lock: str = "") -> PreparedRow:
        """The row that ``stmt`` selects for ``task_exec_id``; ``TaskNotFound`` when there is
        none. ``lock`` names a method whose ``stmt`` locks the row (in a transaction only)."""
        task_exec_id = check_id(task_exec_id, "task_exec_id")
        params = {"task_exec_id": task_exec_id}
        if lock:
            with self._write(need_transaction=lock) as conn:
                rows = self._db.fetch(conn, stmt, params)
        else:
            rows = self._select(stmt, params)
        if not rows:
            raise _not_found(task_exec_id)
        return rows[0]

    def get_state(self, task_exec_id: str) -> TaskState:
        return task_from_row(self._row_by_id(_BY_ID, task_exec_id))

    def get_state_for_update(self, task_exec_id: str) -> TaskState:
        stmt = self._db.statement("task_for_update", lambda d: d.for_update(_BY_ID))
        return task_from_row(self._row_by_id(stmt, task_exec_id, lock="get_state_for_update"))

    def get_usage_summary(self, task_exec_id: str) -> UsageSummary | None:
        return usage_from(self._row_by_id(_USAGE_BY_ID, task_exec_id).usage)

    def list_tasks_in_workflow(self, workflow_exec_id: str) -> dict[str, TaskState]:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        return latest_by_task_id(self._list(_T.workflow_exec_id == workflow_exec_id))

    def list_tasks_by_status(self, workflow_exec_id: str, status: Status) -> list[TaskState]:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        status = check_enum(Status, status, "status")
        return self._list(_T.workflow_exec_id == workflow_exec_id, _T.status == status.value)

    def list_tasks_by_agent(self, workflow_exec_id: str, agent_id: str) -> list[TaskState]:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        agent_id = check_id(agent_id, "agent_id")
        return self._list(_T.workflow_exec_id == workflow_exec_id, _T.agent_id == agent_id)

    def list_tasks_by_tool(self, workflow_exec_id: str, tool_id: str) -> list[TaskState]:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        tool_id = check_id(tool_id, "tool_id")
        return self._list(_T.workflow_exec_id == workflow_exec_id, _T.tool_id == tool_id)

    def list_children(self, parent_state_id: str) -> list[TaskState]:
        parent_state_id = check_id(parent_state_id, "parent_state_id")
        rows = self._select(_CHILDREN, {"parent": parent_state_id})
        return [task_from_row(row) for row in rows]

    def list_children_outputs(self, parent_state_id: str) -> dict[str, dict[str, Any]]:
        parent_state_id = check_id(parent_state_id, "parent_state_id")
        children = self._list(_T.parent_state_id == parent_state_id, _T.output.is_not(None))
        return {
            task_id: task.output
            for task_id, task in latest_by_task_id(children).items()
            if task.output is not None
        }

    def get_child_by_task_id(self, parent_state_id: str, task_id: str) -> TaskState:
        parent_state_id = check_id(parent_state_id, "parent_state_id")
        task_id = check_id(task_id, "task_id")
        stmt = (
            sa.select(task_states)
            .where(_T.parent_state_id == parent_state_id, _T.task_id == task_id)
            .order_by(_T.created_at.desc(), _T.task_exec_id.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise TaskNotFound(f"task {parent_state_id} has no child with task_id {task_id}")
        return task_from_row(row)

    def get_task_tree(self, root_state_id: str, max_depth: int = 100) -> list[TaskState]:
        root_state_id = check_id(root_state_id, "root_state_id")
        max_depth = check_tree_depth(max_depth)
        depth = sa.literal(0, sa.Integer).label("depth")
        tree = (
            sa.select(task_states, depth)
            .where(_T.task_exec_id == root_state_id)
            .cte("task_tree", recursive=True)
        )
        child = task_states.alias("child")
        tree = tree.union_all(
            sa.select(child, (tree.c.depth + 1).label("depth"))
            .join(tree, child.c.parent_state_id == tree.c.task_exec_id)
            .where(tree.c.depth < max_depth)
        )
        stmt = sa.select(tree).order_by(tree.c.depth, tree.c.created_at, tree.c.task_exec_id)
        with self._read() as conn:
            rows = list(conn.execute(stmt))
        # A parent link rewritten into a cycle would repeat rows at greater depths (bounded by
        # max_depth); each task is reported once, at its smallest depth.
        seen: set[str] = set()
        tree_states = []
        for row in rows:
            if row.task_exec_id not in seen:
                seen.add(row.task_exec_id)
                tree_states.append(task_from_row(row))
        return tree_states

    def get_progress_info(self, parent_state_id: str) -> ProgressInfo:
        parent_state_id = check_id(parent_state_id, "parent_state_id")
        stmt = (
            sa.select(_T.status, sa.func.count())
            .where(_T.parent_state_id == parent_state_id)
            .group_by(_T.status)
        )
        with self._read() as conn:
            counts = {Status(status): int(n) for status, n in conn.execute(stmt)}
        return ProgressInfo.from_counts(counts)

    def merge_usage(self, task_exec_id: str, summary: UsageSummary | None) -> UsageSummary | None:
        return merge_usage_into(
            self, task_states, _T.task_exec_id, task_exec_id, summary, _not_found
        )

"""``WorkflowRepository`` on SQLAlchemy Core, one implementation for both databases."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compozy.core import DEFAULT_PAGE_SIZE, Page, Status
from compozy.core.values import check_enum, check_id, utc_now
from compozy.errors import WorkflowNotFound
from compozy.store.drivers.base import Driver
from compozy.store.repos.common import (
    TASKS_OF_EXECUTION,
    Repository,
    from_row,
    latest_by_task_id,
    mapped_columns,
    merge_usage_into,
    not_before,
    now_param,
    task_from_row,
    tasks_of_executions,
    upsert_values,
)
from compozy.store.repos.paging import read_page
from compozy.store.tables import task_states, workflow_states
from compozy.task import TaskState
from compozy.usage import UsageSummary
from compozy.workflow import (
    OutputTransformer,
    WorkflowFilter,
    WorkflowState,
    WorkflowSummary,
    complete,
)

_WF = workflow_states.c
_NEWEST_FIRST = (_WF.created_at.desc(), _WF.workflow_exec_id.desc())


_BY_ID = sa.select(workflow_states).where(_WF.workflow_exec_id == sa.bindparam("exec_id"))
_UPDATE_STATUS = (
    sa.update(workflow_states)
    .where(_WF.workflow_exec_id == sa.bindparam("exec_id"))
    .values(status=sa.bindparam("new_status"), updated_at=not_before(_WF.updated_at, now_param()))
    .returning(*workflow_states.c)
)


# Written by an upsert: every mapped field but the key and created_at (kept) and updated_at.
_UPDATABLE = tuple(
    name
    for name in mapped_columns(WorkflowState, workflow_states)
    if name not in ("workflow_exec_id", "created_at", "updated_at")
)


def _upsert_statement(driver: Driver) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE of every column but created_at; values come as params."""
    insert = driver.insert(workflow_states)
    updated: dict[str, Any] = {name: insert.excluded[name] for name in _UPDATABLE}
    updated["updated_at"] = not_before(_WF.updated_at, insert.excluded.updated_at)
    return insert.on_conflict_do_update(
        index_elements=[_WF.workflow_exec_id], set_=updated
    ).returning(*workflow_states.c)


def _not_found(exec_id: str) -> WorkflowNotFound:
    return WorkflowNotFound(f"workflow execution {exec_id} not found")


def _from_row(row: Any, tasks: list[TaskState]) -> WorkflowState:
    return from_row(WorkflowState, workflow_states, row, tasks=latest_by_task_id(tasks))


class SqlWorkflowRepository(Repository):
    """Workflow executions with their tasks."""

    def _load(self, conn: Connection, rows: Sequence[Any]) -> list[WorkflowState]:
        tasks = tasks_of_executions(self._db, conn, [r.workflow_exec_id for r in rows])
        return [_from_row(r, tasks[r.workflow_exec_id]) for r in rows]

    def _load_by_id(
        self, conn: Connection, stmt: sa.ClauseElement, workflow_exec_id: str, **params: Any
    ) -> WorkflowState:
        """The execution that ``stmt`` returns for ``workflow_exec_id`` (bound as ``exec_id``,
        next to ``params``), with its tasks; ``WorkflowNotFound`` when it returns none."""
        rows = self._db.fetch(conn, stmt, {"exec_id": workflow_exec_id, **params})
        if not rows:
            raise _not_found(workflow_exec_id)
        return self._load(conn, rows)[0]

    def _one(self, stmt: sa.Select[Any], missing: str) -> WorkflowState:
        with self._read() as conn:
            row = conn.execute(stmt.limit(1)).first()
            if row is None:
                raise WorkflowNotFound(missing)
            return self._load(conn, [row])[0]

    def list_states(self, filter: WorkflowFilter | None = None) -> list[WorkflowState]:
        stmt = sa.select(workflow_states).where(*_conditions(filter)).order_by(*_NEWEST_FIRST)
        with self._read() as conn:
            return self._load(conn, list(conn.execute(stmt)))

    def list_page(
        self,
        filter: WorkflowFilter | None = None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[WorkflowSummary]:
        stmt = sa.select(workflow_states).where(*_conditions(filter))
        with self._read() as conn:
            page = read_page(conn, stmt, _WF.workflow_exec_id, limit=limit, cursor=cursor)
            counts = _task_status_counts(conn, [r.workflow_exec_id for r in page.items])
        summaries = [_summary(r, counts.get(r.workflow_exec_id, {})) for r in page.items]
        return Page(summaries, page.next_cursor)

    def upsert_state(self, state: WorkflowState) -> WorkflowState:
        values = upsert_values(state, workflow_states)
        stmt = self._db.statement("workflow_upsert", _upsert_statement)
        with self._write() as conn:
            return self._load(conn, self._db.fetch(conn, stmt, values))[0]

    def update_status(self, workflow_exec_id: str, status: Status) -> WorkflowState:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        status = check_enum(Status, status, "status")
        params = {"new_status": status.value, "now": utc_now()}
        with self._write() as conn:
            return self._load_by_id(conn, _UPDATE_STATUS, workflow_exec_id, **params)

    def _row_and_tasks(self, workflow_exec_id: str) -> tuple[Any, list[TaskState]]:
        """The execution's row and all its task states in task order, read in one snapshot
        with two statements; ``WorkflowNotFound`` when there is no such execution."""
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        params = {"exec_id": workflow_exec_id}
        rows, task_rows = self._db.select_together(
            [(_BY_ID, params), (TASKS_OF_EXECUTION, params)], self._bound
        )
        if not rows:
            raise _not_found(workflow_exec_id)
        return rows[0], [task_from_row(row) for row in task_rows]

    def get_state(self, workflow_exec_id: str) -> WorkflowState:
        return _from_row(*self._row_and_tasks(workflow_exec_id))

    def get_detail(self, workflow_exec_id: str) -> tuple[WorkflowSummary, list[TaskState]]:
        """The execution as a list shows it, and every task state of it in task order (the
        API's detail). The store's own, not in the repository protocol."""
        row, tasks = self._row_and_tasks(workflow_exec_id)
        counts = Counter(task.status for task in latest_by_task_id(tasks).values())
        return _summary(row, counts), tasks

    def get_state_by_id(self, workflow_id: str) -> WorkflowState:
        workflow_id = check_id(workflow_id, "workflow_id")
        stmt = (
            sa.select(workflow_states)
            .where(_WF.workflow_id == workflow_id)
            .order_by(*_NEWEST_FIRST)
        )
        return self._one(stmt, f"no execution of workflow {workflow_id} found")

    def _by_task_column(self, workflow_id: str, column: str, value: str) -> WorkflowState:
        workflow_id = check_id(workflow_id, "workflow_id")
        value = check_id(value, column)
        has_task = (
            sa.select(sa.literal(1))
            .where(task_states.c.workflow_exec_id == _WF.workflow_exec_id)
            .where(task_states.c[column] == value)
            .exists()
        )
        stmt = (
            sa.select(workflow_states)
            .where(_WF.workflow_id == workflow_id, has_task)
            .order_by(*_NEWEST_FIRST)
        )
        return self._one(
            stmt, f"no execution of workflow {workflow_id} has a task with {column} {value}"
        )

    def get_state_by_task_id(self, workflow_id: str, task_id: str) -> WorkflowState:
        return self._by_task_column(workflow_id, "task_id", task_id)

    def get_state_by_agent_id(self, workflow_id: str, agent_id: str) -> WorkflowState:
        return self._by_task_column(workflow_id, "agent_id", agent_id)

    def get_state_by_tool_id(self, workflow_id: str, tool_id: str) -> WorkflowState:
        return self._by_task_column(workflow_id, "tool_id", tool_id)

    def complete_workflow(
        self, workflow_exec_id: str, transformer: OutputTransformer | None = None
    ) -> WorkflowState:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        locked = self._db.statement("workflow_for_update", lambda d: d.for_update(_BY_ID))
        with self._write() as conn:
            state = self._load_by_id(conn, locked, workflow_exec_id)
            if state.status.is_terminal:
                return state
            top_level = [
                task_from_row(r)
                for r in conn.execute(
                    sa.select(task_states).where(
                        task_states.c.workflow_exec_id == workflow_exec_id,
                        task_states.c.parent_state_id.is_(None),
                    )
                )
            ]
            complete(state, top_level, transformer)  # the rules live in the domain
            now = now_param(utc_now())
            stmt = (
                sa.update(workflow_states)
                .where(_WF.workflow_exec_id == workflow_exec_id)
                .values(
                    status=state.status.value,
                    output=state.output,
                    error=state.error,
                    updated_at=not_before(_WF.updated_at, now),
                )
                .returning(_WF.updated_at)
            )
            state.updated_at = conn.execute(stmt).scalar_one()
            return state

    def merge_usage(
        self, workflow_exec_id: str, summary: UsageSummary | None
    ) -> UsageSummary | None:
        return merge_usage_into(
            self, workflow_states, _WF.workflow_exec_id, workflow_exec_id, summary, _not_found
        )


def _conditions(filter: WorkflowFilter | None) -> list[sa.ColumnElement[bool]]:
    conditions = filter.conditions() if filter is not None else {}
    found = [_WF[name] == value for name, value in conditions.items() if name != "status"]
    status = conditions.get("status")
    if status is not None:
        # Written into the SQL, not bound: a plan for a bound status (PostgreSQL's generic plan
        # of a statement psycopg prepared) guesses a third of the rows match and walks the
        # created_at index instead of (status, created_at): most of the table for a rare one.
        # There are eight statuses, so at most eight statement texts.
        literal: sa.BindParameter[str] = sa.bindparam(
            None, Status(status).value, literal_execute=True
        )
        found.append(_WF.status == literal)
    return found


def _task_status_counts(conn: Connection, exec_ids: list[str]) -> dict[str, dict[Status, int]]:
    """exec id -> status -> how many task ids have it in their latest state: one query."""
    if not exec_ids:
        return {}
    t = task_states.c
    latest = sa.func.row_number().over(
        partition_by=(t.workflow_exec_id, t.task_id),
        order_by=(t.created_at.desc(), t.task_exec_id.desc()),
    )
    ranked = (
        sa.select(t.workflow_exec_id, t.status, latest.label("rank"))
        .where(t.workflow_exec_id.in_(exec_ids))
        .subquery()
    )
    stmt = (
        sa.select(ranked.c.workflow_exec_id, ranked.c.status, sa.func.count())
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.workflow_exec_id, ranked.c.status)
    )
    counts: dict[str, dict[Status, int]] = {}
    for exec_id, status, n in conn.execute(stmt):
        counts.setdefault(exec_id, {})[Status(status)] = int(n)
    return counts


def _summary(row: Any, counts: Mapping[Status, int]) -> WorkflowSummary:
    return from_row(
        WorkflowSummary, workflow_states, row, task_status_counts=dict(sorted(counts.items()))
    )

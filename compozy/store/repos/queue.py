"""``ExecutionQueue`` on SQLAlchemy Core: workers claim executions through the database.

Claiming locks the oldest claimable rows with ``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL
(two workers never wait for, nor get, the same row) and runs under ``BEGIN IMMEDIATE`` on
SQLite (one writer at a time). A claim sets the owner, the lease expiry and the next value of
``claim_count``; every later write of the owner is fenced by the owner and that count, so a
worker that lost its execution finds out at its next write.

Lock order, here and in every transaction of the engine: the workflow row first, then its task
rows. Leases use this host's clock: worker hosts need clocks that agree to well within a lease.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from compozy.core import RUNNING_STATUSES, TERMINAL_STATUSES, Status
from compozy.core.values import MAX_LEASE, check_enum, check_id, check_json_object, utc_now
from compozy.errors import ClaimLost, ExecutionFinished, ValidationError, WorkflowNotFound
from compozy.store.repos.common import Repository, not_before, now_param
from compozy.store.repos.workflow import SqlWorkflowRepository
from compozy.store.tables import task_states, workflow_states
from compozy.workflow import Claim, Renewal, WorkflowState

_WF = workflow_states.c
_T = task_states.c
_QUEUED = (Status.PENDING.value, Status.RUNNING.value)
_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
_UNFINISHED_TASKS = tuple(s.value for s in sorted(RUNNING_STATUSES))
_ROW = sa.select(
    _WF.workflow_exec_id, _WF.status, _WF.worker_id, _WF.claim_count, _WF.lease_expires_at
).where(_WF.workflow_exec_id == sa.bindparam("exec_id"))


def _check_lease(lease: float) -> timedelta:
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease <= MAX_LEASE:
        raise ValidationError(
            f"lease is {lease!r}; give a number of seconds greater than 0 and at most {MAX_LEASE:g}"
        )
    return timedelta(seconds=lease)


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    now_value = now_param(now)
    return sa.and_(
        _WF.status.in_(_QUEUED),
        sa.or_(_WF.worker_id.is_(None), _WF.lease_expires_at < now_value),
    )


def _lost(claim: Claim, row: Any) -> str | None:
    """Why ``claim`` no longer holds the execution in ``row``, or None if it does."""
    exec_id = claim.workflow_exec_id
    if row is None:
        return f"workflow execution {exec_id} no longer exists"
    if row.status in _TERMINAL:
        return f"workflow execution {exec_id} is {row.status} already"
    if row.worker_id != claim.worker_id or row.claim_count != claim.claim_count:
        owner = row.worker_id or "nobody (it was released)"
        return (
            f"workflow execution {exec_id} is now held by {owner} (claim {row.claim_count}), "
            f"not by {claim.worker_id} (claim {claim.claim_count})"
        )
    return None


class SqlExecutionQueue(Repository):
    """Claims, leases, fencing, release and cancellation of workflow executions."""

    def _take(
        self, conn: Connection, rows: list[Row[Any]], worker_id: str, lease: timedelta
    ) -> list[Claim]:
        if not rows:
            return []
        now = utc_now()
        expires = now + lease
        previous = {
            r.workflow_exec_id: r.worker_id
            for r in rows
            if r.worker_id is not None and r.worker_id != worker_id
        }
        stmt = (
            sa.update(workflow_states)
            .where(_WF.workflow_exec_id.in_([r.workflow_exec_id for r in rows]))
            .values(
                worker_id=worker_id,
                lease_expires_at=sa.bindparam("expires", expires, type_=_WF.lease_expires_at.type),
                claim_count=_WF.claim_count + 1,
                status=Status.RUNNING.value,
                updated_at=not_before(_WF.updated_at, now_param(now)),
            )
            .returning(
                _WF.workflow_exec_id, _WF.claim_count, _WF.cancel_requested_at, _WF.created_at
            )
        )
        taken = sorted(conn.execute(stmt), key=lambda r: (r.created_at, r.workflow_exec_id))
        return [
            Claim(
                workflow_exec_id=r.workflow_exec_id,
                worker_id=worker_id,
                claim_count=r.claim_count,
                lease_expires_at=expires,
                previous_worker=previous.get(r.workflow_exec_id),
                cancel_requested=r.cancel_requested_at is not None,
            )
            for r in taken
        ]

    def claim(
        self,
        worker_id: str,
        *,
        limit: int,
        lease: float,
        workflow_ids: Collection[str] | None = None,
    ) -> list[Claim]:
        worker_id = check_id(worker_id, "worker_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit is {limit!r}; give a whole number of at least 1")
        duration = _check_lease(lease)
        select = sa.select(_WF.workflow_exec_id, _WF.worker_id).where(_claimable(utc_now()))
        if workflow_ids is not None:
            wanted = sorted({check_id(w, "workflow_ids") for w in workflow_ids})
            if not wanted:
                return []
            select = select.where(_WF.workflow_id.in_(wanted))
        stmt = self._db.driver.for_update(
            select.order_by(_WF.created_at, _WF.workflow_exec_id).limit(limit), skip_locked=True
        )
        with self._write() as conn:
            return self._take(conn, list(conn.execute(stmt)), worker_id, duration)

    def _lock_unfinished(self, conn: Connection, workflow_exec_id: str, verb: str) -> Row[Any]:
        """Lock the execution's queue row and return it; ``WorkflowNotFound`` when missing,
        ``ExecutionFinished`` ("a finished execution cannot be <verb>") when terminal."""
        locked = self._db.statement("queue_row_for_update", lambda d: d.for_update(_ROW))
        row = conn.execute(locked, {"exec_id": workflow_exec_id}).first()
        if row is None:
            raise WorkflowNotFound(f"workflow execution {workflow_exec_id} not found")
        if row.status in _TERMINAL:
            raise ExecutionFinished(
                f"workflow execution {workflow_exec_id} is {row.status} already; "
                f"a finished execution cannot be {verb}"
            )
        return row

    def claim_execution(self, workflow_exec_id: str, worker_id: str, *, lease: float) -> Claim:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        worker_id = check_id(worker_id, "worker_id")
        duration = _check_lease(lease)
        with self._write() as conn:
            row = self._lock_unfinished(conn, workflow_exec_id, "claimed")
            now = utc_now()
            held = row.worker_id not in (None, worker_id)
            if held and row.lease_expires_at is not None and row.lease_expires_at >= now:
                raise ClaimLost(
                    f"workflow execution {workflow_exec_id} is held by worker {row.worker_id} "
                    f"until {row.lease_expires_at.isoformat()}"
                )
            return self._take(conn, [row], worker_id, duration)[0]

    def renew(self, claims: list[Claim], *, lease: float) -> Renewal:
        duration = _check_lease(lease)
        if not claims:
            return Renewal(frozenset(), frozenset())
        by_worker: dict[str, list[Claim]] = {}
        for claim in claims:
            by_worker.setdefault(claim.worker_id, []).append(claim)
        held: dict[tuple[str, str], Any] = {}
        with self._write() as conn:
            for worker_id, own in by_worker.items():
                stmt = (
                    sa.update(workflow_states)
                    .where(
                        _WF.workflow_exec_id.in_([c.workflow_exec_id for c in own]),
                        _WF.worker_id == worker_id,
                        _WF.status.not_in(_TERMINAL),
                    )
                    .values(
                        lease_expires_at=sa.bindparam(
                            "expires", utc_now() + duration, type_=_WF.lease_expires_at.type
                        )
                    )
                    .returning(_WF.workflow_exec_id, _WF.claim_count, _WF.cancel_requested_at)
                )
                held.update({(worker_id, r.workflow_exec_id): r for r in conn.execute(stmt)})
        lost: set[str] = set()
        cancel: set[str] = set()
        for claim in claims:
            row = held.get((claim.worker_id, claim.workflow_exec_id))
            if row is None or row.claim_count != claim.claim_count:
                lost.add(claim.workflow_exec_id)
            elif row.cancel_requested_at is not None:
                cancel.add(claim.workflow_exec_id)
        return Renewal(frozenset(lost), frozenset(cancel))

    def _fence(self, conn: Connection, claim: Claim, *, exclusive: bool = True) -> None:
        if exclusive:
            locked = self._db.statement("queue_row_for_update", lambda d: d.for_update(_ROW))
        else:
            locked = self._db.statement("queue_row_for_share", lambda d: d.for_share(_ROW))
        rows = self._db.fetch(conn, locked, {"exec_id": claim.workflow_exec_id})
        reason = _lost(claim, rows[0] if rows else None)
        if reason is not None:
            raise ClaimLost(reason)

    def fence(self, claim: Claim, *, exclusive: bool = False) -> None:
        # A read (no savepoint): it writes nothing that a refusal would have to undo.
        unit = self._db.unit(write=False, bound=self._bound, need_transaction="fence")
        with unit as conn:
            self._fence(conn, claim, exclusive=exclusive)

    def release(self, claim: Claim) -> None:
        now = now_param(utc_now())
        with self._write() as conn:
            self._fence(conn, claim)
            conn.execute(
                sa.update(workflow_states)
                .where(_WF.workflow_exec_id == claim.workflow_exec_id)
                .values(
                    status=Status.PENDING.value,
                    worker_id=None,
                    lease_expires_at=None,
                    updated_at=not_before(_WF.updated_at, now),
                )
            )
            conn.execute(
                sa.update(task_states)
                .where(
                    _T.workflow_exec_id == claim.workflow_exec_id,
                    _T.status.in_(_UNFINISHED_TASKS),
                )
                .values(status=Status.PENDING.value, updated_at=not_before(_T.updated_at, now))
            )

    def abort(self, claim: Claim, status: Status, error: dict[str, Any]) -> None:
        status = check_enum(Status, status, "status")
        if not status.is_terminal:
            raise ValidationError(
                f"status is {status.value}; an aborted execution needs a terminal one"
            )
        error = check_json_object(error, "error") or {}
        with self._write() as conn:
            self._fence(conn, claim)
            self._end(conn, claim.workflow_exec_id, status, error)

    def _end(self, conn: Connection, exec_id: str, status: Status, error: dict[str, Any]) -> None:
        """The execution and its unfinished tasks end ``status`` with ``error``."""
        now = now_param(utc_now())
        conn.execute(
            sa.update(task_states)
            .where(_T.workflow_exec_id == exec_id, _T.status.in_(_UNFINISHED_TASKS))
            .values(status=status.value, error=error, updated_at=not_before(_T.updated_at, now))
        )
        conn.execute(
            sa.update(workflow_states)
            .where(_WF.workflow_exec_id == exec_id)
            .values(
                status=status.value,
                error=error,
                lease_expires_at=None,
                updated_at=not_before(_WF.updated_at, now),
            )
        )

    def request_cancel(self, workflow_exec_id: str) -> WorkflowState:
        workflow_exec_id = check_id(workflow_exec_id, "workflow_exec_id")
        with self._write() as conn:
            row = self._lock_unfinished(conn, workflow_exec_id, "canceled")
            now = now_param(utc_now())
            conn.execute(
                sa.update(workflow_states)
                .where(_WF.workflow_exec_id == workflow_exec_id)
                .values(
                    cancel_requested_at=sa.func.coalesce(_WF.cancel_requested_at, now),
                    updated_at=not_before(_WF.updated_at, now),
                )
            )
            if row.worker_id is None:  # nobody runs it: nobody else would end it
                error = {"message": "canceled while no worker ran it", "code": "CANCELED"}
                self._end(conn, workflow_exec_id, Status.CANCELED, error)
            return SqlWorkflowRepository(self._db, conn).get_state(workflow_exec_id)

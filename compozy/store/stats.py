"""Figures about a store for monitoring: executions by workflow and status, how long finished
executions took, and the connection pool. ``GET /metrics`` (compozy.api.metrics) reports them.

The execution figures are read from the database, so every server over one database reports
the same numbers, whichever worker ran the executions; one grouped query over
``workflow_states`` per call. The pool figures are this process's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from compozy.core import Status
from compozy.store import Store, sql_connection
from compozy.store.tables import workflow_states

__all__ = ["FINISHED", "ExecutionFigures", "PoolFigures", "execution_figures", "pool_figures"]

FINISHED = frozenset({Status.SUCCESS, Status.FAILED, Status.TIMED_OUT, Status.CANCELED})
"""The statuses whose executions have a duration (created to last update)."""


@dataclass(frozen=True)
class ExecutionFigures:
    """The stored executions of one workflow in one status."""

    workflow_id: str
    status: str
    count: int
    duration_sum: float | None
    """Seconds from creation to the last update, summed: None unless the status is finished."""
    duration_buckets: tuple[int, ...]
    """How many took at most each bound (cumulative, as Prometheus histograms count)."""


@dataclass(frozen=True)
class PoolFigures:
    """This process's connection pool: its size and its open connections, in use or idle."""

    size: int
    in_use: int
    idle: int
    overflow: int
    """Connections open beyond ``size`` (up to database.max_overflow)."""


def _seconds(dialect: str) -> Any:
    """SQL for an execution's duration in seconds, from created_at to updated_at."""
    c = workflow_states.c
    if dialect == "sqlite":  # timestamps are ISO-8601 text there
        return (sa.func.julianday(c.updated_at) - sa.func.julianday(c.created_at)) * 86400.0
    return sa.extract("epoch", c.updated_at - c.created_at)


def execution_figures(store: Store, bounds: Sequence[float]) -> list[ExecutionFigures]:
    """Every (workflow_id, status) with stored executions, ordered by both; durations are
    bucketed by ``bounds`` (seconds, ascending)."""
    c = workflow_states.c
    with sql_connection(store) as conn:
        seconds = _seconds(conn.dialect.name)
        buckets = [sa.func.sum(sa.case((seconds <= bound, 1), else_=0)) for bound in bounds]
        stmt = (
            sa.select(c.workflow_id, c.status, sa.func.count(), sa.func.sum(seconds), *buckets)
            .group_by(c.workflow_id, c.status)
            .order_by(c.workflow_id, c.status)
        )
        rows = conn.execute(stmt).all()
    figures = []
    for workflow_id, status, count, total, *in_buckets in rows:
        finished = status in FINISHED
        figures.append(
            ExecutionFigures(
                workflow_id=workflow_id,
                status=status,
                count=int(count),
                duration_sum=max(float(total or 0.0), 0.0) if finished else None,
                duration_buckets=tuple(int(n or 0) for n in in_buckets) if finished else (),
            )
        )
    return figures


def pool_figures(store: Store) -> PoolFigures | None:
    """The pool's size and use, or None for a pool that keeps no count (in-memory SQLite)."""
    pool = store._db.engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return None
    return PoolFigures(
        size=pool.size(),
        in_use=pool.checkedout(),
        idle=pool.checkedin(),
        # SQLAlchemy counts from -size, so a pool that has opened 2 of 5 says -3.
        overflow=max(pool.overflow(), 0),
    )

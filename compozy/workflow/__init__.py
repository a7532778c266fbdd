"""Workflow execution state, its filter and its repository protocol."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from compozy.core import DEFAULT_PAGE_SIZE, Page, Status, new_id
from compozy.core.values import (
    check_enum,
    check_id,
    check_json_object,
    check_optional_id,
)
from compozy.errors import ValidationError, WorkflowNotReady
from compozy.task import ExecutionState
from compozy.usage import UsageSummary

if TYPE_CHECKING:
    from compozy.task import TaskState

__all__ = [
    "TRANSFORM_FAILED",
    "Claim",
    "ExecutionQueue",
    "OutputTransformer",
    "Renewal",
    "WorkflowFilter",
    "WorkflowRepository",
    "WorkflowState",
    "WorkflowSummary",
    "complete",
    "default_output",
]


@dataclass(kw_only=True)
class _WorkflowFields:
    """The fields of ``WorkflowState`` that come before those of ``ExecutionState``."""

    workflow_exec_id: str = field(default_factory=new_id)
    workflow_id: str
    status: Status


@dataclass(kw_only=True)
class WorkflowState(ExecutionState, _WorkflowFields):
    """One execution of a workflow; ``tasks`` maps task_id to its latest task state."""

    tasks: dict[str, TaskState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = check_enum(Status, self.status, "status")

    def validate(self) -> None:
        """Normalise and check every field; raise ``ValidationError`` naming the bad one."""
        self.workflow_exec_id = check_id(self.workflow_exec_id, "workflow_exec_id")
        self.workflow_id = check_id(self.workflow_id, "workflow_id")
        self.status = check_enum(Status, self.status, "status")
        super().validate()
        if not isinstance(self.tasks, dict):
            raise ValidationError("tasks must be a dict of task_id to TaskState")


@dataclass(kw_only=True)
class WorkflowFilter:
    """Equality tests ANDed together; fields left None are not tested."""

    workflow_id: str | None = None
    workflow_exec_id: str | None = None
    status: Status | None = None

    def __post_init__(self) -> None:
        self.workflow_id = check_optional_id(self.workflow_id, "filter workflow_id")
        self.workflow_exec_id = check_optional_id(self.workflow_exec_id, "filter workflow_exec_id")
        if self.status is not None:
            self.status = check_enum(Status, self.status, "filter status")

    def conditions(self) -> dict[str, Any]:
        """The set fields as column name -> value."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(kw_only=True)
class WorkflowSummary:
    """An execution as a list shows it: no task map, but counts of its tasks by status, and
    who runs it (``worker_id``, ``lease_expires_at``, ``claim_count``)."""

    workflow_exec_id: str
    workflow_id: str
    status: Status
    usage: UsageSummary | None
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    worker_id: str | None
    lease_expires_at: datetime | None
    claim_count: int
    cancel_requested_at: datetime | None
    task_status_counts: dict[Status, int]
    """Status -> how many task ids have that status in their latest state (zeros left out)."""

    def __post_init__(self) -> None:
        self.status = check_enum(Status, self.status, "status")

    @property
    def task_count(self) -> int:
        """Distinct task ids of the execution."""
        return sum(self.task_status_counts.values())


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A worker's hold on one execution, good until ``lease_expires_at`` unless renewed.

    ``claim_count`` is the execution's claim counter after this claim: every write the worker
    makes is fenced by (``worker_id``, ``claim_count``), so a worker whose execution was claimed
    by another finds out at its next write (``ClaimLost``).
    """

    workflow_exec_id: str
    worker_id: str
    claim_count: int
    lease_expires_at: datetime
    previous_worker: str | None = None
    """The worker whose lease had expired when this claim took the execution over (None when
    the execution was new or released)."""
    cancel_requested: bool = False


@dataclass(frozen=True)
class Renewal:
    """What renewing a worker's leases found."""

    lost: frozenset[str]
    """Executions the worker no longer owns (claimed by another, finished or released)."""
    cancel_requested: frozenset[str]
    """Executions still owned whose cancellation was requested."""


OutputTransformer = Callable[[WorkflowState], dict[str, Any] | None]
"""Builds a completed workflow's output from its state; None means ``{}``."""


class WorkflowRepository(Protocol):
    """Persistence of workflow executions; same behaviour on every backend."""

    def list_states(self, filter: WorkflowFilter | None = None) -> list[WorkflowState]:
        """Matching executions with their tasks, created_at DESC, workflow_exec_id DESC."""
        ...

    def list_page(
        self,
        filter: WorkflowFilter | None = None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[WorkflowSummary]:
        """One page of matching executions, created_at DESC, workflow_exec_id DESC (keyset:
        a later page costs what the first costs, and rows inserted meanwhile never repeat one);
        ``ValidationError`` for a limit outside 1..500 or a cursor this store did not give."""
        ...

    def upsert_state(self, state: WorkflowState) -> WorkflowState:
        """Insert, or update every field but created_at; return the stored state."""
        ...

    def update_status(self, workflow_exec_id: str, status: Status) -> WorkflowState:
        """Set the status; ``WorkflowNotFound`` when missing."""
        ...

    def get_state(self, workflow_exec_id: str) -> WorkflowState:
        """The execution with all its tasks; ``WorkflowNotFound`` when missing."""
        ...

    def get_state_by_id(self, workflow_id: str) -> WorkflowState:
        """The most recently created execution of ``workflow_id``."""
        ...

    def get_state_by_task_id(self, workflow_id: str, task_id: str) -> WorkflowState:
        """The most recent execution of ``workflow_id`` having a task ``task_id``."""
        ...

    def get_state_by_agent_id(self, workflow_id: str, agent_id: str) -> WorkflowState:
        """The most recent execution of ``workflow_id`` having a task run by ``agent_id``."""
        ...

    def get_state_by_tool_id(self, workflow_id: str, tool_id: str) -> WorkflowState:
        """The most recent execution of ``workflow_id`` having a task calling ``tool_id``."""
        ...

    def complete_workflow(
        self, workflow_exec_id: str, transformer: OutputTransformer | None = None
    ) -> WorkflowState:
        """Set the final status and output from the tasks; idempotent once terminal."""
        ...

    def merge_usage(
        self, workflow_exec_id: str, summary: UsageSummary | None
    ) -> UsageSummary | None:
        """Atomically merge ``summary`` into the stored usage; return the result (None: no-op)."""
        ...


TRANSFORM_FAILED = "OUTPUT_TRANSFORMATION_FAILED"
"""The error code of an execution whose output transformer raised."""


def complete(
    state: WorkflowState, top_level: list[TaskState], transformer: OutputTransformer | None
) -> WorkflowState:
    """Apply the completion rules to a non-terminal ``state`` (with all its tasks) given its
    top-level tasks, and return it: ``WorkflowNotReady`` (nothing changed) while any of them
    runs; FAILED if any failed, else SUCCESS.

    The output: the transformer's (``{}`` for None) when one is given; else, on SUCCESS, the
    default output (``default_output``); on FAILED, None, since the error says what happened.
    A transformer that raises leaves FAILED, output None and
    ``{"message", "code": OUTPUT_TRANSFORMATION_FAILED}``; it gets a deep copy (its
    ``output`` is the default output), so what it does to its argument is not stored. A store
    persists the result."""
    running = sorted(t.task_exec_id for t in top_level if t.status.is_running)
    if running:
        raise WorkflowNotReady(
            f"workflow execution {state.workflow_exec_id} cannot complete: top-level tasks "
            f"{', '.join(running)} are still running"
        )
    failed = any(t.status.is_failed for t in top_level)
    state.status = Status.FAILED if failed else Status.SUCCESS
    state.output = default_output(top_level)
    if transformer is None:
        if failed:
            state.output = None
        return state
    try:
        output = transformer(copy.deepcopy(state))
        state.output = check_json_object(output, "transformed output") or {}
    except Exception as exc:  # noqa: BLE001 - a failing transformer is recorded, not raised
        state.status = Status.FAILED
        state.output = None
        state.error = {"message": str(exc) or type(exc).__name__, "code": TRANSFORM_FAILED}
    return state


def default_output(top_level: list[TaskState]) -> dict[str, Any]:
    """``{task_id: output}`` of the top-level tasks: the output of a workflow without output
    templates. A container's output holds its children's (a collection's ``results`` in item
    order), so nothing is lost to children sharing a task id, and no row field (ids, parents,
    types) leaks in. Two top-level states of one task id: the latest created counts."""
    ordered = sorted(top_level, key=lambda t: (t.created_at is None, t.created_at, t.task_exec_id))
    return {task.task_id: task.output for task in ordered}


class ExecutionQueue(Protocol):
    """The database as the queue of executions: workers claim, renew, fence and release.

    An execution is claimable when it is PENDING and unclaimed, or PENDING/RUNNING with a lease
    that has expired. Claims are taken oldest first; two workers never get the same claim.
    """

    def claim(
        self,
        worker_id: str,
        *,
        limit: int,
        lease: float,
        workflow_ids: Collection[str] | None = None,
    ) -> list[Claim]:
        """Claim up to ``limit`` claimable executions (of these workflows only, when given) for
        ``lease`` seconds, oldest first; they become RUNNING."""
        ...

    def claim_execution(self, workflow_exec_id: str, worker_id: str, *, lease: float) -> Claim:
        """Claim this one execution; ``ClaimLost`` if a live lease of another worker holds it,
        ``ExecutionFinished`` if it is terminal, ``WorkflowNotFound`` if missing."""
        ...

    def renew(self, claims: list[Claim], *, lease: float) -> Renewal:
        """Extend the leases of claims still held; say which are lost or asked to cancel."""
        ...

    def fence(self, claim: Claim, *, exclusive: bool = False) -> None:
        """Inside a transaction: lock the execution's row and raise ``ClaimLost`` unless the
        claim still holds it and it is not terminal. Writes after it in the transaction are
        the claim owner's (no claim, release or abort can come between).

        The lock is shared (PostgreSQL ``FOR SHARE``), so the writes of one execution's
        parallel tasks do not wait for each other; a transaction that will also update the
        workflow row (``merge_usage``, ``complete_workflow``) passes ``exclusive=True``
        (``FOR NO KEY UPDATE``): taking the row's strongest lock first keeps one lock order.
        """
        ...

    def release(self, claim: Claim) -> None:
        """Give the execution back: PENDING and unclaimed, its running tasks PENDING, so
        another worker resumes it at once; ``ClaimLost`` if the claim no longer holds it."""
        ...

    def abort(self, claim: Claim, status: Status, error: dict[str, Any]) -> None:
        """End the claimed execution and its unfinished tasks with a terminal ``status`` and
        ``error`` (fenced: ``ClaimLost`` if the claim no longer holds it)."""
        ...

    def request_cancel(self, workflow_exec_id: str) -> WorkflowState:
        """Cancel: an unclaimed PENDING execution ends CANCELED at once; a claimed one is
        marked for its worker to stop. ``ExecutionFinished`` (a conflict) once terminal."""
        ...

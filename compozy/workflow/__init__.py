"""Workflow execution state, its filter and its repository protocol (SPEC 1.2, 3.1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from compozy.core import Status, new_id
from compozy.core.values import (
    check_enum,
    check_id,
    check_json_object,
    check_optional_id,
    check_optional_timestamp,
)
from compozy.errors import ValidationError
from compozy.usage import UsageSummary

if TYPE_CHECKING:
    from compozy.task import TaskState

__all__ = ["OutputTransformer", "WorkflowFilter", "WorkflowRepository", "WorkflowState"]


@dataclass(kw_only=True)
class WorkflowState:
    """One execution of a workflow; ``tasks`` maps task_id to its latest task state."""

    workflow_exec_id: str = field(default_factory=new_id)
    workflow_id: str
    status: Status
    usage: UsageSummary | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = check_enum(Status, self.status, "status")

    def validate(self) -> None:
        """Normalise and check every field; raise ``ValidationError`` naming the bad one."""
        self.workflow_exec_id = check_id(self.workflow_exec_id, "workflow_exec_id")
        self.workflow_id = check_id(self.workflow_id, "workflow_id")
        self.status = check_enum(Status, self.status, "status")
        if self.usage is not None:
            if not isinstance(self.usage, UsageSummary):
                raise ValidationError("usage must be a UsageSummary or None")
            self.usage.validate()
        for name in ("input", "output", "error"):
            check_json_object(getattr(self, name), name)
        self.created_at = check_optional_timestamp(self.created_at, "created_at")
        self.updated_at = check_optional_timestamp(self.updated_at, "updated_at")
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


OutputTransformer = Callable[[WorkflowState], dict[str, Any] | None]
"""Builds a completed workflow's output from its state; None means ``{}``."""


class WorkflowRepository(Protocol):
    """Persistence of workflow executions; same behaviour on every backend."""

    def list_states(self, filter: WorkflowFilter | None = None) -> list[WorkflowState]:
        """Matching executions with their tasks, created_at DESC, workflow_exec_id DESC."""
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
        """Set the final status and output from the tasks (SPEC 3.1); idempotent once terminal."""
        ...

    def merge_usage(
        self, workflow_exec_id: str, summary: UsageSummary | None
    ) -> UsageSummary | None:
        """Atomically merge ``summary`` into the stored usage; return the result (None: no-op)."""
        ...

"""Task execution state, progress, filter and the task repository protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from compozy.core import Component, ExecutionType, Status, new_id
from compozy.core.values import (
    check_enum,
    check_id,
    check_json_object,
    check_optional_id,
    check_optional_timestamp,
)
from compozy.errors import ValidationError
from compozy.usage import UsageSummary

__all__ = ["ExecutionState", "ProgressInfo", "TaskFilter", "TaskRepository", "TaskState"]


@dataclass(kw_only=True)
class _TaskFields:
    """The fields of ``TaskState`` that come before those of ``ExecutionState``."""

    task_exec_id: str = field(default_factory=new_id)
    task_id: str
    workflow_id: str
    workflow_exec_id: str
    parent_state_id: str | None = None
    component: Component
    status: Status
    execution_type: ExecutionType = ExecutionType.BASIC
    agent_id: str | None = None
    action_id: str | None = None
    tool_id: str | None = None


@dataclass(kw_only=True)
class ExecutionState:
    """What the state of a task execution and of a workflow execution both carry, after their
    own fields: the usage, the JSON payload and the timestamps (the store sets those on every
    write). Their columns are ``_execution_columns()`` in compozy/store/tables.py.

    ``TaskState`` and ``WorkflowState`` name it as their first base and the class of their own
    fields (``_TaskFields``, ``_WorkflowFields``) as the second: a dataclass takes the fields of
    its last base first, so their own fields lead in reprs, row values and the API's models.
    """

    usage: UsageSummary | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def validate(self) -> None:
        """Normalise and check, in place, the fields above; raise ``ValidationError``."""
        if self.usage is not None:
            if not isinstance(self.usage, UsageSummary):
                raise ValidationError("usage must be a UsageSummary or None")
            self.usage.validate()
        for name in ("input", "output", "error"):
            check_json_object(getattr(self, name), name)
        self.created_at = check_optional_timestamp(self.created_at, "created_at")
        self.updated_at = check_optional_timestamp(self.updated_at, "updated_at")


@dataclass(kw_only=True)
class TaskState(ExecutionState, _TaskFields):
    """One execution of a task, optionally the child of another task execution."""

    def __post_init__(self) -> None:
        self.component = check_enum(Component, self.component, "component")
        self.status = check_enum(Status, self.status, "status")
        self.execution_type = check_enum(ExecutionType, self.execution_type, "execution_type")

    def validate(self) -> None:
        """Normalise and check every field, including the shape rule; raise ``ValidationError``."""
        self.task_exec_id = check_id(self.task_exec_id, "task_exec_id")
        self.task_id = check_id(self.task_id, "task_id")
        self.workflow_id = check_id(self.workflow_id, "workflow_id")
        self.workflow_exec_id = check_id(self.workflow_exec_id, "workflow_exec_id")
        self.parent_state_id = check_optional_id(self.parent_state_id, "parent_state_id")
        if self.parent_state_id == self.task_exec_id:
            raise ValidationError(f"task {self.task_exec_id} cannot be its own parent_state_id")
        self.component = check_enum(Component, self.component, "component")
        self.status = check_enum(Status, self.status, "status")
        self.execution_type = check_enum(ExecutionType, self.execution_type, "execution_type")
        self.agent_id = check_optional_id(self.agent_id, "agent_id")
        self.action_id = check_optional_id(self.action_id, "action_id")
        self.tool_id = check_optional_id(self.tool_id, "tool_id")
        super().validate()
        self._check_shape()

    def _check_shape(self) -> None:
        has_agent = self.agent_id is not None
        has_action = self.action_id is not None
        has_tool = self.tool_id is not None
        where = f"task {self.task_exec_id} ({self.execution_type.value})"
        if self.execution_type is ExecutionType.ROUTER and (has_agent or has_action or has_tool):
            raise ValidationError(f"{where}: a router task takes no agent_id, action_id or tool_id")
        if self.execution_type is ExecutionType.BASIC:
            agent_call = has_agent and has_action and not has_tool
            tool_call = has_tool and not has_agent and not has_action
            neither = not (has_agent or has_action or has_tool)
            if not (agent_call or tool_call or neither):
                raise ValidationError(
                    f"{where}: a basic task has either agent_id with action_id, or tool_id alone, "
                    "or none of the three"
                )


@dataclass(kw_only=True)
class TaskFilter:
    """Equality tests ANDed together; fields left None are not tested."""

    task_id: str | None = None
    task_exec_id: str | None = None
    workflow_id: str | None = None
    workflow_exec_id: str | None = None
    parent_state_id: str | None = None
    component: Component | None = None
    status: Status | None = None
    execution_type: ExecutionType | None = None
    agent_id: str | None = None
    action_id: str | None = None
    tool_id: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "task_id",
            "task_exec_id",
            "workflow_id",
            "workflow_exec_id",
            "parent_state_id",
            "agent_id",
            "action_id",
            "tool_id",
        ):
            setattr(self, name, check_optional_id(getattr(self, name), f"filter {name}"))
        if self.component is not None:
            self.component = check_enum(Component, self.component, "filter component")
        if self.status is not None:
            self.status = check_enum(Status, self.status, "filter status")
        if self.execution_type is not None:
            self.execution_type = check_enum(
                ExecutionType, self.execution_type, "filter execution_type"
            )

    def conditions(self) -> dict[str, Any]:
        """The set fields as column name -> value."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(kw_only=True)
class ProgressInfo:
    """Counts over the direct children of a task."""

    total_children: int = 0
    success_count: int = 0
    failed_count: int = 0
    canceled_count: int = 0
    timed_out_count: int = 0
    pending_count: int = 0
    running_count: int = 0
    terminal_count: int = 0
    status_counts: dict[Status, int] = field(default_factory=dict)
    completion_rate: float = 0.0
    failure_rate: float = 0.0

    @classmethod
    def from_counts(cls, counts: dict[Status, int]) -> ProgressInfo:
        """Derive every figure from a status -> count map (statuses with 0 are omitted)."""
        status_counts = {status: n for status, n in counts.items() if n}
        total = sum(status_counts.values())

        def count(*statuses: Status) -> int:
            return sum(status_counts.get(s, 0) for s in statuses)

        success = count(Status.SUCCESS)
        failed = count(Status.FAILED)
        timed_out = count(Status.TIMED_OUT)
        return cls(
            total_children=total,
            success_count=success,
            failed_count=failed,
            canceled_count=count(Status.CANCELED),
            timed_out_count=timed_out,
            pending_count=count(Status.PENDING),
            running_count=count(Status.RUNNING, Status.WAITING, Status.PAUSED),
            terminal_count=count(Status.SUCCESS, Status.FAILED, Status.TIMED_OUT, Status.CANCELED),
            status_counts=status_counts,
            completion_rate=success / total if total else 0.0,
            failure_rate=(failed + timed_out) / total if total else 0.0,
        )


class TaskRepository(Protocol):
    """Persistence of task executions; lists are ordered created_at ASC, task_exec_id ASC."""

    def list_states(self, filter: TaskFilter | None = None) -> list[TaskState]:
        """Matching task states."""
        ...

    def list_by_ids(self, ids: list[str]) -> list[TaskState]:
        """The task states with these ids (any number of ids)."""
        ...

    def upsert_state(self, state: TaskState) -> TaskState:
        """Insert, or update every field but created_at; return the stored state."""
        ...

    def get_state(self, task_exec_id: str) -> TaskState:
        """The task state; ``TaskNotFound`` when missing."""
        ...

    def get_state_for_update(self, task_exec_id: str) -> TaskState:
        """The task state, row-locked until the surrounding transaction ends."""
        ...

    def get_usage_summary(self, task_exec_id: str) -> UsageSummary | None:
        """The stored usage, None when there is none."""
        ...

    def list_tasks_in_workflow(self, workflow_exec_id: str) -> dict[str, TaskState]:
        """task_id -> latest task state of that execution."""
        ...

    def list_tasks_by_status(self, workflow_exec_id: str, status: Status) -> list[TaskState]:
        """Task states of the execution with this status."""
        ...

    def list_tasks_by_agent(self, workflow_exec_id: str, agent_id: str) -> list[TaskState]:
        """Task states of the execution run by this agent."""
        ...

    def list_tasks_by_tool(self, workflow_exec_id: str, tool_id: str) -> list[TaskState]:
        """Task states of the execution calling this tool."""
        ...

    def list_children(self, parent_state_id: str) -> list[TaskState]:
        """Direct children of a task state."""
        ...

    def list_children_outputs(self, parent_state_id: str) -> dict[str, dict[str, Any]]:
        """task_id -> output of the latest child with a non-null output."""
        ...

    def get_child_by_task_id(self, parent_state_id: str, task_id: str) -> TaskState:
        """The latest child with this task_id; ``TaskNotFound`` when none."""
        ...

    def get_task_tree(self, root_state_id: str, max_depth: int = 100) -> list[TaskState]:
        """The root and its descendants, ordered depth, created_at, task_exec_id, down to
        ``max_depth`` levels below the root: a whole number from 0 to
        ``compozy.core.MAX_TREE_DEPTH``, ``ValidationError`` otherwise."""
        ...

    def get_progress_info(self, parent_state_id: str) -> ProgressInfo:
        """Counts over the direct children."""
        ...

    def merge_usage(self, task_exec_id: str, summary: UsageSummary | None) -> UsageSummary | None:
        """Atomically merge ``summary`` into the stored usage; return the result (None: no-op)."""
        ...

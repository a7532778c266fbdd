"""Entities to response models.

Entities are never handed to FastAPI as they are. Task and workflow executions copy every
entity field their model has (the models take their fields from the dataclasses, see
``compozy.api.models``), so a new field needs no edit here; users and API keys are copied
field by field, so that nothing is sent that was not chosen (no key hashes).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from compozy.api.models import (
    STORED_TIMESTAMPS,
    APIKeyOut,
    APIKeyPage,
    CreatedAPIKey,
    Progress,
    TaskExecution,
    TaskNode,
    UsageEntryOut,
    UserOut,
    UserPage,
    WorkflowExecutionDetail,
    WorkflowExecutionPage,
    WorkflowExecutionSummary,
)
from compozy.auth import APIKey, User
from compozy.core import Page
from compozy.task import ProgressInfo, TaskState
from compozy.usage import UsageSummary
from compozy.workflow import WorkflowSummary

__all__ = [
    "api_key_out",
    "api_key_page_out",
    "created_api_key_out",
    "progress_out",
    "task_out",
    "task_tree_out",
    "user_out",
    "user_page_out",
    "workflow_detail_out",
    "workflow_page_out",
    "workflow_summary_out",
]

_Model = TypeVar("_Model", bound=BaseModel)


def _stored(value: datetime | None, name: str) -> datetime:
    # The repositories fill timestamps on every write, so a missing one is a server fault.
    if value is None:
        raise RuntimeError(f"a stored entity has no {name}")
    return value


def _same_named(source: Any, model: type[_Model], **overrides: Any) -> _Model:
    """``model`` with each field read from the attribute of ``source`` of the same name, but
    the ``overrides``."""
    values = {name: getattr(source, name) for name in model.model_fields if name not in overrides}
    return model(**values, **overrides)


def _usage_out(usage: UsageSummary | None) -> list[UsageEntryOut] | None:
    if usage is None:
        return None
    return [_same_named(e, UsageEntryOut, agent_ids=list(e.agent_ids)) for e in usage.entries]


def _copied(entity: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of the dataclass ``entity`` that ``model`` has (same name), as it shows them."""
    shown = model.model_fields
    values: dict[str, Any] = {}
    for f in dataclasses.fields(entity):
        if f.name not in shown:
            continue
        value = getattr(entity, f.name)
        if f.name in STORED_TIMESTAMPS:
            value = _stored(value, f.name)
        elif isinstance(value, UsageSummary):
            value = _usage_out(value)
        values[f.name] = value
    return values


def task_out(task: TaskState) -> TaskExecution:
    """The task execution as sent."""
    return TaskExecution(**_copied(task, TaskExecution))


def task_tree_out(tasks: list[TaskState]) -> list[TaskNode]:
    """Nest ``tasks`` (one execution's, oldest first) under their parents; return the roots.

    A task whose parent is not among ``tasks`` is shown as a root rather than dropped.
    """
    nodes = {task.task_exec_id: TaskNode(**_copied(task, TaskNode)) for task in tasks}
    roots: list[TaskNode] = []
    for task in tasks:
        node = nodes[task.task_exec_id]
        parent = nodes.get(task.parent_state_id) if task.parent_state_id else None
        (parent.children if parent is not None else roots).append(node)
    return roots


def _workflow_fields(summary: WorkflowSummary, model: type[BaseModel]) -> dict[str, Any]:
    counts = {status.value: n for status, n in summary.task_status_counts.items() if n}
    return {
        **_copied(summary, model),
        "task_count": summary.task_count,
        "task_status_counts": dict(sorted(counts.items())),
        "cancel_requested": summary.cancel_requested_at is not None,
    }


def workflow_summary_out(summary: WorkflowSummary) -> WorkflowExecutionSummary:
    """The execution as a list item."""
    return WorkflowExecutionSummary(**_workflow_fields(summary, WorkflowExecutionSummary))


def workflow_page_out(page: Page[WorkflowSummary]) -> WorkflowExecutionPage:
    """A page of executions as sent."""
    return WorkflowExecutionPage(
        items=[workflow_summary_out(summary) for summary in page.items],
        next_cursor=page.next_cursor,
    )


def workflow_detail_out(
    summary: WorkflowSummary, tasks: list[TaskState]
) -> WorkflowExecutionDetail:
    """The execution with ``tasks`` (all its task states, oldest first) as a tree."""
    return WorkflowExecutionDetail(
        **_workflow_fields(summary, WorkflowExecutionDetail), tasks=task_tree_out(tasks)
    )


def progress_out(progress: ProgressInfo) -> Progress:
    """Progress with string status keys."""
    status_counts = {status.value: n for status, n in sorted(progress.status_counts.items())}
    return _same_named(progress, Progress, status_counts=status_counts)


def user_out(user: User) -> UserOut:
    """The user as sent."""
    return UserOut(
        id=user.id,
        email=user.email,
        role=user.role,
        created_at=_stored(user.created_at, "created_at"),
    )


def _api_key_fields(key: APIKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "prefix": key.prefix,
        "created_at": _stored(key.created_at, "created_at"),
        "last_used": key.last_used,
    }


def user_page_out(page: Page[User]) -> UserPage:
    """A page of users as sent."""
    return UserPage(items=[user_out(user) for user in page.items], next_cursor=page.next_cursor)


def api_key_out(key: APIKey) -> APIKeyOut:
    """The key's metadata as sent."""
    return APIKeyOut(**_api_key_fields(key))


def api_key_page_out(page: Page[APIKey]) -> APIKeyPage:
    """A page of keys' metadata as sent."""
    return APIKeyPage(items=[api_key_out(key) for key in page.items], next_cursor=page.next_cursor)


def created_api_key_out(key: APIKey, plaintext: str) -> CreatedAPIKey:
    """A just-created key's metadata and its plaintext."""
    return CreatedAPIKey(**_api_key_fields(key), api_key=plaintext)

"""The execution models take their fields from the domain dataclasses (issue 8).

A field added to ``TaskState`` or ``WorkflowSummary`` (with its column) reaches the API with
no edit in ``compozy.api``: these tests pin where the fields come from and how they are shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from compozy.api import models, serialize
from compozy.api.models import (
    TaskExecution,
    WorkflowExecutionDetail,
    WorkflowExecutionSummary,
)
from compozy.core import Component, Status
from compozy.store import Store
from compozy.task import TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowSummary

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _names(entity: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(entity)]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(mode="serialization")


@pytest.mark.compozy_backends(
    "sqlite", reason="the OpenAPI document does not depend on the database"
)
def test_task_execution_lists_exactly_the_task_state_fields_in_order(
    compozy_store: Store, app_factory: Callable[..., FastAPI]
) -> None:
    components = app_factory(compozy_store).openapi()["components"]["schemas"]
    schema = components["TaskExecution"]
    assert list(schema["properties"]) == _names(TaskState)
    assert schema["required"] == _names(TaskState)  # nullable ones are sent as null
    assert list(components["TaskNode"]["properties"]) == [*_names(TaskState), "children"]


def test_workflow_summary_fields_come_from_workflow_summary() -> None:
    copied = [n for n in _names(WorkflowSummary) if n not in models._WORKFLOW_FIELDS_NOT_COPIED]
    assert copied  # the identity, status, payload and timestamps
    assert list(WorkflowExecutionSummary.model_fields) == [
        *copied,
        "task_count",
        "task_status_counts",
        "worker_id",
        "claim_count",
        "cancel_requested",
    ]
    assert list(WorkflowExecutionDetail.model_fields) == [
        *WorkflowExecutionSummary.model_fields,
        "tasks",
    ]
    # Nothing of the entity is lost but what the API deliberately does not show.
    shown = set(WorkflowExecutionSummary.model_fields)
    assert set(_names(WorkflowSummary)) - shown == {"lease_expires_at", "cancel_requested_at"}


def test_types_are_shown_as_the_api_shows_them() -> None:
    props = _schema(TaskExecution)["properties"]
    # Optional on the entity (the store sets them), never null in the API.
    assert props["created_at"] == {"format": "date-time", "title": "Created At", "type": "string"}
    assert props["updated_at"]["type"] == "string"
    assert props["usage"]["anyOf"] == [
        {"items": {"$ref": "#/$defs/UsageEntryOut"}, "type": "array"},
        {"type": "null"},
    ]
    assert props["status"] == {"$ref": "#/$defs/Status"}  # enums stay enums
    assert props["parent_state_id"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


def test_a_new_entity_field_is_shown_without_an_api_edit() -> None:
    @dataclasses.dataclass(kw_only=True)
    class NotedTask(TaskState):
        note: str | None = None
        seen_at: datetime | None = None

    model = models._fields_of(NotedTask)
    assert list(model.model_fields) == _names(NotedTask)
    task = NotedTask(
        task_id="t",
        workflow_id="w",
        workflow_exec_id="e",
        component=Component.TASK,
        status=Status.RUNNING,
        usage=UsageSummary(entries=[UsageEntry(provider="p", model="m", prompt_tokens=1)]),
        created_at=T0,
        updated_at=T0,
        note="hello",
        seen_at=T0,
    )
    body = model(**serialize._copied(task, model)).model_dump(mode="json")
    assert body["note"] == "hello"
    assert body["seen_at"] == "2024-05-01T12:00:00.000000Z"
    assert body["usage"][0]["prompt_tokens"] == 1
    assert list(body) == _names(NotedTask)


def test_old_years_keep_four_digits() -> None:
    early = datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    task = TaskState(
        task_id="t",
        workflow_id="w",
        workflow_exec_id="e",
        component=Component.TASK,
        status=Status.SUCCESS,
        created_at=early,
        updated_at=early,
    )
    body = serialize.task_out(task).model_dump(mode="json")
    assert body["created_at"] == "0005-01-02T03:04:05.000006Z"

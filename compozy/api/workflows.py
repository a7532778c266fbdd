"""``GET /api/v0/workflows``: the workflow definitions the server's engine runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from compozy.api.deps import (
    ApiContext,
    AuthDependencies,
    TaskOutline,
    error_responses,
    no_engine,
)

__all__ = ["TaskDefinitionOut", "WorkflowDefinitionOut", "WorkflowList", "workflows_router"]


class TaskDefinitionOut(BaseModel):
    """A task of a workflow definition, with the tasks nested in it."""

    task_id: str
    type: str = Field(description="basic, composite, parallel, collection or router")
    tool: str | None = None
    description: str | None = None
    tasks: list[TaskDefinitionOut] = Field(
        default_factory=list,
        description="Nested tasks: a parallel or composite task's, a collection's template, "
        "a router's routes",
    )


class WorkflowDefinitionOut(BaseModel):
    """A loaded workflow definition: what `POST /api/v0/workflows/{id}/executions` runs."""

    workflow_id: str
    description: str | None = None
    input_schema: dict[str, Any] | None = Field(
        default=None, description="The JSON Schema an execution's input is checked against"
    )
    outputs: list[str] = Field(
        default_factory=list, description="The names of the execution's output fields"
    )
    tasks: list[TaskDefinitionOut]


class WorkflowList(BaseModel):
    """Every workflow definition the server runs, by id."""

    items: list[WorkflowDefinitionOut]


def _task_out(task: TaskOutline) -> TaskDefinitionOut:
    return TaskDefinitionOut(
        task_id=task.id,
        type=task.type,
        tool=task.tool,
        description=task.description,
        tasks=[_task_out(child) for child in task.children()],
    )


def workflows_router(ctx: ApiContext, auth: AuthDependencies) -> APIRouter:
    """``GET /api/v0/workflows`` (any valid key)."""
    router = APIRouter(prefix="/api/v0", tags=["workflows"], dependencies=[Depends(auth.user)])

    @router.get(
        "/workflows",
        summary="List the workflow definitions this server runs",
        responses=error_responses(401, 503),
    )
    def list_workflows() -> WorkflowList:
        """Every loaded definition, ordered by id, with its input schema, output names and
        task tree. Without an engine (an app served by something else than `compozy start`)
        there are none to list: 503."""
        if ctx.engine is None:
            raise no_engine("it has no workflow definitions")
        definitions = ctx.engine.definitions
        return WorkflowList(
            items=[
                WorkflowDefinitionOut(
                    workflow_id=definition.id,
                    description=definition.description,
                    input_schema=dict(definition.input_schema) if definition.input_schema else None,
                    outputs=list(definition.outputs or {}),
                    tasks=[_task_out(task) for task in definition.tasks],
                )
                for _, definition in sorted(definitions.items())
            ]
        )

    return router

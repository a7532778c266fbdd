"""Execution routes: start a workflow, list, read and cancel workflow and task executions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from starlette.concurrency import run_in_threadpool

from compozy.api.deps import (
    ApiContext,
    AuthDependencies,
    ExecutionWatcher,
    IdPath,
    error_responses,
    no_engine,
)
from compozy.api.models import (
    ExecutionStarted,
    Progress,
    StartExecutionRequest,
    TaskExecution,
    WorkflowExecutionDetail,
    WorkflowExecutionPage,
    WorkflowExecutionSummary,
    WorkflowListQuery,
)
from compozy.api.serialize import (
    progress_out,
    task_out,
    workflow_detail_out,
    workflow_page_out,
    workflow_summary_out,
)
from compozy.core import Status
from compozy.errors import WorkflowNotFound
from compozy.store import TransactionScope
from compozy.workflow import WorkflowFilter, WorkflowRepository, WorkflowSummary

__all__ = ["MAX_WAIT", "execution_summary", "executions_router"]

MAX_WAIT = 60.0
"""The longest ``?wait=`` of ``GET /api/v0/executions/workflows/{exec_id}``, in seconds."""
# How often a long-poll re-reads the execution in case a signal was missed (or, without an
# engine that can signal, at all).
_REREAD_SIGNALLED = 0.25
_REREAD_UNSIGNALLED = 0.05


def execution_summary(workflows: WorkflowRepository, exec_id: str) -> WorkflowSummary:
    """One execution as a list shows it (task counts, worker, cancellation); 404 if unknown."""
    page = workflows.list_page(WorkflowFilter(workflow_exec_id=exec_id), limit=1)
    if not page.items:
        raise WorkflowNotFound(f"workflow execution {exec_id} not found")
    return page.items[0]


async def wait_until_finished(ctx: ApiContext, exec_id: str, seconds: float) -> None:
    """Return once the execution is terminal, or after ``seconds``; 404 if unknown.

    Holds no thread while waiting: the engine's signal (its run ended here, or another process
    said so) sets an asyncio event; reads (of the status only, a tenth of what the detail
    costs) run in the thread pool."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    engine: object = ctx.engine
    unsubscribe: Callable[[], None] | None = None

    def signal() -> None:  # called from the engine's threads
        loop.call_soon_threadsafe(changed.set)

    if isinstance(engine, ExecutionWatcher):
        unsubscribe = engine.watch(exec_id, signal)
    reread = _REREAD_SIGNALLED if unsubscribe is not None else _REREAD_UNSIGNALLED
    deadline = loop.time() + seconds
    try:
        while True:
            state = await run_in_threadpool(ctx.store.workflows.get_state, exec_id)
            if state.status.is_terminal or deadline - loop.time() <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(reread, deadline - loop.time()))
            changed.clear()
    finally:
        if unsubscribe is not None:
            unsubscribe()


def executions_router(ctx: ApiContext, auth: AuthDependencies) -> APIRouter:
    """The routes under ``/api/v0`` that start, read and cancel executions (any valid key)."""
    router = APIRouter(prefix="/api/v0", tags=["executions"], dependencies=[Depends(auth.user)])

    @router.post(
        "/workflows/{workflow_id}/executions",
        status_code=202,
        summary="Start an execution of a workflow",
        responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    )
    def start_execution(
        workflow_id: IdPath,
        body: Annotated[StartExecutionRequest | None, Body()] = None,
    ) -> ExecutionStarted:
        """Validate the input against the workflow's schema and run it in the background."""
        if ctx.engine is None:
            raise no_engine("it cannot start executions")
        exec_id = ctx.engine.start(workflow_id, body.input if body is not None else None)
        return ExecutionStarted(
            workflow_exec_id=exec_id, workflow_id=workflow_id, status=Status.PENDING
        )

    @router.get(
        "/executions/workflows",
        summary="List workflow executions, newest first, a page at a time",
        responses=error_responses(401, 422, 503),
    )
    def list_workflow_executions(
        query: Annotated[WorkflowListQuery, Query()],
    ) -> WorkflowExecutionPage:
        """Executions ordered by created_at, then workflow_exec_id, descending; no task trees.

        Keyset-paged: pass the page's `next_cursor` as `cursor` (with the same filters) for the
        next one, which costs what the first costs; executions started meanwhile never repeat
        one already seen.
        """
        page = ctx.store.workflows.list_page(
            WorkflowFilter(status=query.status, workflow_id=query.workflow_id),
            limit=query.limit,
            cursor=query.cursor,
        )
        return workflow_page_out(page)

    @router.get(
        "/executions/workflows/{exec_id}",
        summary="A workflow execution with its task tree",
        responses=error_responses(401, 404, 422, 503),
    )
    async def get_workflow_execution(
        exec_id: IdPath,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_WAIT,
                description="Seconds to wait for the execution to be terminal before answering "
                f"(a long-poll, at most {MAX_WAIT:g}); it answers as soon as it is, else with "
                "the state it has then. 0 (the default) answers at once.",
            ),
        ] = 0.0,
    ) -> WorkflowExecutionDetail:
        """The execution and every task state of it, children nested under their parents.

        With `wait`, the answer comes when the execution is terminal (or the wait is over):
        poll with `?wait=30` instead of many times a second."""

        def read() -> WorkflowExecutionDetail:
            return workflow_detail_out(*ctx.store.workflows.get_detail(exec_id))

        if wait > 0:
            await wait_until_finished(ctx, exec_id, wait)
        return await run_in_threadpool(read)

    @router.post(
        "/executions/workflows/{exec_id}/cancel",
        status_code=202,
        summary="Cancel a workflow execution",
        responses=error_responses(401, 404, 409, 422, 503),
    )
    def cancel_workflow_execution(exec_id: IdPath) -> WorkflowExecutionSummary:
        """A PENDING execution that no worker has claimed is CANCELED at once. A RUNNING one is
        marked (`cancel_requested`) and its worker stops it, canceling its unfinished tasks,
        within about a second. A finished execution cannot be canceled: 409."""

        def cancel(tx: TransactionScope) -> WorkflowSummary:
            tx.queue.request_cancel(exec_id)
            return execution_summary(tx.workflows, exec_id)

        return workflow_summary_out(ctx.store.run_in_transaction(cancel))

    @router.get(
        "/executions/tasks/{task_exec_id}",
        summary="A task execution",
        responses=error_responses(401, 404, 422, 503),
    )
    def get_task_execution(task_exec_id: IdPath) -> TaskExecution:
        """The task execution (without its children: see the workflow execution's tree)."""
        return task_out(ctx.store.tasks.get_state(task_exec_id))

    @router.get(
        "/executions/tasks/{task_exec_id}/progress",
        summary="Progress of a task execution's children",
        responses=error_responses(401, 404, 422, 503),
    )
    def get_task_progress(task_exec_id: IdPath) -> Progress:
        """Counts and rates over the task execution's direct children."""
        ctx.store.tasks.get_state(task_exec_id)  # TaskNotFound (404) for an unknown id
        return progress_out(ctx.store.tasks.get_progress_info(task_exec_id))

    return router

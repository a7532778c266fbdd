"""Small builders the contract tests share: entities with explicit, distinct timestamps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from compozy.core import Component, ExecutionType, Status
from compozy.store import Store
from compozy.task import TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowState

R = TypeVar("R")

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def past(*stamps: datetime | None) -> None:
    """Return once the clock reads later than every one of ``stamps``, so that what is written
    next is stamped strictly later. No sleep of a guessed length: with a clock of microsecond
    resolution it returns at once (a few loops at most), on a coarser one as soon as it ticks."""
    latest = max(s for s in stamps if s is not None)
    while datetime.now(UTC) <= latest:
        pass


def at(seconds: float) -> datetime:
    """A fixed instant ``seconds`` after T0 (tests never depend on the clock for ordering)."""
    return T0 + timedelta(seconds=seconds)


def workflow(
    store: Store, *, workflow_id: str = "wf", status: Status = Status.RUNNING, **fields: Any
) -> WorkflowState:
    """Store and return a workflow execution."""
    return store.workflows.upsert_state(
        WorkflowState(workflow_id=workflow_id, status=status, **fields)
    )


def task(
    store: Store,
    wf: WorkflowState,
    task_id: str = "t",
    status: Status = Status.RUNNING,
    *,
    parent: TaskState | None = None,
    **fields: Any,
) -> TaskState:
    """Store and return a task of ``wf`` (a child of ``parent`` if given)."""
    fields.setdefault("component", Component.TASK)
    fields.setdefault("execution_type", ExecutionType.BASIC)
    return store.tasks.upsert_state(
        TaskState(
            task_id=task_id,
            workflow_id=wf.workflow_id,
            workflow_exec_id=wf.workflow_exec_id,
            parent_state_id=parent.task_exec_id if parent is not None else None,
            status=status,
            **fields,
        )
    )


def parallel(
    store: Store,
    wf: WorkflowState,
    task_id: str = "t",
    status: Status = Status.RUNNING,
    **fields: Any,
) -> TaskState:
    """Store and return a PARALLEL task of ``wf``."""
    return task(store, wf, task_id, status, execution_type=ExecutionType.PARALLEL, **fields)


def chain(
    store: Store,
    wf: WorkflowState,
    *links: tuple[str, Status, ExecutionType, dict[str, Any] | None],
) -> list[TaskState]:
    """Store a line of tasks of ``wf``, each a child of the one before it (the first is a
    top-level task), created at(1), at(2), ...: one ``(task_id, status, execution_type, output)``
    a task. Returns them in that order."""
    made: list[TaskState] = []
    for n, (task_id, status, execution_type, output) in enumerate(links, start=1):
        fields = {"execution_type": execution_type, "output": output, "created_at": at(n)}
        made.append(task(store, wf, task_id, status, parent=made[-1] if made else None, **fields))
    return made


def usage(
    provider: str = "openai",
    model: str = "gpt-4o",
    prompt: int = 10,
    completion: int = 5,
    **fields: Any,
) -> UsageSummary:
    """A one-entry usage summary."""
    return UsageSummary(
        entries=[
            UsageEntry(
                provider=provider,
                model=model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                **fields,
            )
        ]
    )


def together(count: int, action: Callable[[int], R]) -> list[R | Exception]:
    """Run ``action(i)`` on ``count`` threads released at the same moment; return each value,
    or the exception that ended it, in order (so a test asserts on the real errors)."""
    barrier = threading.Barrier(count)

    def run(i: int) -> R | Exception:
        barrier.wait()
        try:
            return action(i)
        except Exception as exc:  # noqa: BLE001 - returned so the test can assert on it
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))

"""This project's dataset, registered for compozy's ``compozy_dataset`` fixture."""

from datetime import UTC, datetime, timedelta

from compozy.core import Component, Status
from compozy.store import Store
from compozy.task import TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.datasets import dataset

NIGHTLY_RUNS = 200


@dataset("nightly-history")
def nightly_history(store: Store) -> None:
    """200 nightly report runs, one in ten FAILED, each with one task."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with store.transaction():
        for day in range(NIGHTLY_RUNS):
            status = Status.FAILED if day % 10 == 0 else Status.SUCCESS
            run = store.workflows.upsert_state(
                WorkflowState(
                    workflow_id="nightly-report",
                    status=status,
                    created_at=start + timedelta(days=day),
                )
            )
            store.tasks.upsert_state(
                TaskState(
                    task_id="render",
                    workflow_id=run.workflow_id,
                    workflow_exec_id=run.workflow_exec_id,
                    component=Component.TASK,
                    status=status,
                )
            )

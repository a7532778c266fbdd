"""The store's own reads beside the protocol's: the API's execution detail
(``workflows.get_detail``) says what the executions list and ``tasks.list_states`` say."""

from __future__ import annotations

import pytest

from compozy.core import Status
from compozy.errors import WorkflowNotFound
from compozy.store import Store
from compozy.task import TaskFilter
from compozy.workflow import WorkflowFilter
from compozy_testkit.contract._build import at, task, workflow


def test_the_detail_matches_the_list_row_and_the_task_list(compozy_store: Store) -> None:
    wf = workflow(compozy_store)
    other = workflow(compozy_store)
    top = task(compozy_store, wf, "top", Status.RUNNING, created_at=at(1))
    # A task id run twice: only its latest state counts.
    task(compozy_store, wf, "retry", Status.FAILED, parent=top, created_at=at(2))
    task(compozy_store, wf, "retry", Status.SUCCESS, parent=top, created_at=at(3))
    task(compozy_store, wf, "left", Status.PENDING, parent=top, created_at=at(4))
    task(compozy_store, other, "elsewhere", Status.FAILED)

    summary, tasks = compozy_store.workflows.get_detail(wf.workflow_exec_id)

    listed = compozy_store.workflows.list_page(
        WorkflowFilter(workflow_exec_id=wf.workflow_exec_id), limit=1
    ).items
    assert [summary] == listed
    assert summary.task_status_counts == {Status.PENDING: 1, Status.RUNNING: 1, Status.SUCCESS: 1}
    assert tasks == compozy_store.tasks.list_states(
        TaskFilter(workflow_exec_id=wf.workflow_exec_id)
    )
    assert [t.task_id for t in tasks] == ["top", "retry", "retry", "left"]


def test_the_detail_of_an_unknown_execution_is_not_found(compozy_store: Store) -> None:
    with pytest.raises(WorkflowNotFound, match="nope"):
        compozy_store.workflows.get_detail("nope")

"""Query budgets on the hot paths: a fixed number of queries whatever the number of rows, so an
N+1 cannot come back unnoticed (``compozy_queries``, on every backend)."""

from __future__ import annotations

from compozy.core import Status
from compozy.store import Store
from compozy.workflow import WorkflowState
from compozy_testkit.contract._build import at, task, workflow
from compozy_testkit.queries import QueryLog


def _executions(store: Store, count: int, tasks: int) -> list[WorkflowState]:
    made = []
    with store.transaction():
        for n in range(count):
            wf = workflow(store, created_at=at(n))
            top = task(store, wf, "top", Status.SUCCESS)
            for k in range(tasks - 1):
                task(store, wf, f"child-{k}", Status.SUCCESS, parent=top)
            made.append(wf)
    return made


def test_a_workflow_with_its_tasks_is_read_in_two_queries(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    (few,) = _executions(compozy_store, 1, 2)
    (many,) = _executions(compozy_store, 1, 60)
    for wf in (few, many):
        with compozy_queries.assert_max(2):
            state = compozy_store.workflows.get_state(wf.workflow_exec_id)
        assert len(state.tasks) == len({t.task_id for t in state.tasks.values()})


def test_a_page_of_executions_costs_the_same_for_10_or_100_rows(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    _executions(compozy_store, 100, 3)
    for limit in (10, 100):
        with compozy_queries.assert_max(2):
            page = compozy_store.workflows.list_page(limit=limit)
        assert len(page.items) == limit


def test_completing_a_workflow_costs_the_same_for_2_or_60_tasks(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    for tasks in (2, 60):
        (wf,) = _executions(compozy_store, 1, tasks)
        with compozy_queries.assert_max(4):
            done = compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        assert done.status is Status.SUCCESS


def test_a_task_tree_is_one_query_whatever_its_size(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    (wf,) = _executions(compozy_store, 1, 40)
    root = compozy_store.tasks.list_tasks_in_workflow(wf.workflow_exec_id)["top"]
    with compozy_queries.assert_max(1):
        tree = compozy_store.tasks.get_task_tree(root.task_exec_id)
    assert len(tree) == 40
    assert compozy_queries.queries  # the budget saw them

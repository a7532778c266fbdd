"""This project's tests on a dataset, with a query budget, and across backends."""

import pytest

from compozy.core import Status
from compozy.store import Store
from compozy.workflow import WorkflowFilter, WorkflowState
from compozy_testkit.parity import Parity
from compozy_testkit.queries import QueryLog


@pytest.mark.compozy_dataset("nightly-history")
def test_the_failed_nights_are_one_in_ten(compozy_dataset: Store) -> None:
    failed = compozy_dataset.workflows.list_states(WorkflowFilter(status=Status.FAILED))
    assert len(failed) == 20  # one in ten of the 200 nights


def test_the_dashboard_reads_a_run_in_two_queries(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    run = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="nightly-report", status=Status.RUNNING)
    )
    with compozy_queries.assert_max(2):
        compozy_store.workflows.get_state(run.workflow_exec_id)


def test_sqlite_and_postgres_page_the_same_way(compozy_parity: Parity) -> None:
    def three_runs_then_a_page(store: Store) -> object:
        for status in (Status.SUCCESS, Status.FAILED, Status.SUCCESS):
            store.workflows.upsert_state(WorkflowState(workflow_id="nightly-report", status=status))
        return [w.status for w in store.workflows.list_page(limit=2).items]

    compozy_parity.reset()
    # Newest first on both; compozy_parity.run fails if the two stores answer differently.
    assert compozy_parity.run(three_runs_then_a_page) == [Status.SUCCESS, Status.FAILED]

"""A live Store outlives a PostgreSQL restart: pooled connections the server closed are found at
checkout (no pre-ping round trip) and replaced, so the next call after the restart succeeds."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest

from compozy.config import DatabaseConfig
from compozy.core import Component, Status
from compozy.store import Store, open_store
from compozy.task import TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.provision.postgres import (
    PostgresServer,
    PostgresUnavailable,
    start_local_cluster,
)

pytestmark = pytest.mark.compozy_backends(
    "postgres", reason="restarts a PostgreSQL server of its own"
)
POOLED = 3


@pytest.fixture
def server(compozy_backend: str) -> Iterator[PostgresServer]:
    try:
        started = start_local_cluster()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"needs a local PostgreSQL cluster it can restart: {exc}", pytrace=False)
        pytest.skip(f"needs a local PostgreSQL cluster it can restart: {exc}")
    yield started
    started.stop()


@pytest.fixture
def store(server: PostgresServer) -> Iterator[Store]:
    config = DatabaseConfig(
        driver="postgres", conn_string=server.admin_url, auto_migrate=True, pool_size=POOLED
    )
    opened = open_store(config)
    yield opened
    opened.close()


def _fill_the_pool(store: Store) -> list[str]:
    """Several threads write at once, so the pool holds several live connections."""
    ids: list[str] = []
    barrier = threading.Barrier(POOLED)

    def write() -> None:
        barrier.wait()
        state = store.workflows.upsert_state(WorkflowState(workflow_id="wf", status=Status.RUNNING))
        ids.append(state.workflow_exec_id)

    threads = [threading.Thread(target=write) for _ in range(POOLED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == POOLED
    return ids


def test_every_kind_of_call_succeeds_right_after_a_restart(
    server: PostgresServer, store: Store
) -> None:
    ids = _fill_the_pool(store)
    server.restart()  # every pooled connection is now closed by the server
    # Each kind of unit: a one-statement read, a read of several statements, a write, and a
    # transaction; each would meet a dead pooled connection first.
    assert store.workflows.get_state(ids[0]).status is Status.RUNNING
    assert [s.workflow_exec_id for s in store.workflows.list_states()] != []
    written = store.workflows.upsert_state(WorkflowState(workflow_id="wf", status=Status.PENDING))
    with store.transaction() as tx:
        assert tx.workflows.get_state(written.workflow_exec_id).status is Status.PENDING
    # A write of fixed statements on a pooled driver connection (Database.write_unit).
    task = store.tasks.upsert_state(
        TaskState(
            task_id="t",
            workflow_id="wf",
            workflow_exec_id=written.workflow_exec_id,
            component=Component.TASK,
            status=Status.RUNNING,
        )
    )
    assert store.tasks.get_state(task.task_exec_id).status is Status.RUNNING
    assert {store.workflows.get_state(i).workflow_exec_id for i in ids} == set(ids)


def test_a_pooled_session_the_server_terminated_is_replaced(
    server: PostgresServer, store: Store
) -> None:
    ids = _fill_the_pool(store)
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        pids = [
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'compozy'"
            )
        ]
        assert len(pids) == POOLED
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert {store.workflows.get_state(i).workflow_exec_id for i in ids} == set(ids)
    assert store.tasks.list_states() == []

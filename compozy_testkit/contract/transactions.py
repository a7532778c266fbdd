"""Contract of ``Store.transaction()`` and the store's other obligations.

Tests taking ``compozy_store`` hold for any implementation of the protocols; tests taking
``compozy_database`` or ``compozy_empty_database`` exercise compozy's own Store (several Stores on
one database, busy timeouts, pools, a missing schema) on the plugin's backends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from compozy.auth import User
from compozy.core import Status
from compozy.errors import CompozyError, EmailExists, StoreUnavailable, WorkflowNotFound
from compozy.store import Store
from compozy.workflow import WorkflowState
from compozy_testkit.contract._build import task, usage, workflow
from compozy_testkit.databases import BACKEND_CLASSES, TestDatabase


class _Boom(Exception):
    pass


class TransactionContract:
    """Commit, rollback, savepoints and joining, on whatever Store ``compozy_store`` gives."""

    def test_transaction_commits_on_normal_exit(self, compozy_store: Store) -> None:
        with compozy_store.transaction() as tx:
            wf = workflow(compozy_store)
            tx.workflows.update_status(wf.workflow_exec_id, Status.SUCCESS)
        assert compozy_store.workflows.get_state(wf.workflow_exec_id).status is Status.SUCCESS

    def test_transaction_rolls_back_on_exception_and_reraises_it(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(_Boom), compozy_store.transaction() as tx:
            tx.workflows.upsert_state(workflow_state := _state("rolled-back"))
            raise _Boom
        with pytest.raises(WorkflowNotFound):
            compozy_store.workflows.get_state(workflow_state.workflow_exec_id)

    def test_store_repositories_join_the_open_transaction_of_their_thread(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(_Boom), compozy_store.transaction():
            stored = workflow(compozy_store, workflow_exec_id="joined")
            # Visible inside the transaction, through the store's own repositories...
            assert compozy_store.workflows.get_state("joined") == stored
            raise _Boom
        # ...and gone with it, because the write joined the transaction.
        assert compozy_store.workflows.list_states() == []

    def test_a_nested_transaction_is_a_savepoint_rolled_back_alone_when_its_error_is_caught(
        self, compozy_store: Store
    ) -> None:
        with compozy_store.transaction() as outer:
            outer.workflows.upsert_state(_state("kept"))
            with pytest.raises(_Boom), compozy_store.transaction() as inner:
                inner.workflows.upsert_state(_state("discarded"))
                raise _Boom
            with compozy_store.transaction() as inner:
                inner.workflows.upsert_state(_state("also-kept"))
        ids = {s.workflow_exec_id for s in compozy_store.workflows.list_states()}
        assert ids == {"kept", "also-kept"}

    def test_a_caught_refused_write_leaves_the_transaction_usable(
        self, compozy_store: Store
    ) -> None:
        with compozy_store.transaction() as tx:
            tx.auth.create_user(User(email="one@x.io"))
            with pytest.raises(EmailExists):
                tx.auth.create_user(User(email="ONE@x.io"))
            tx.auth.create_user(User(email="two@x.io"))
        assert {u.email for u in compozy_store.auth.list_users()} == {"one@x.io", "two@x.io"}

    def test_an_uncaught_error_in_a_nested_block_rolls_back_everything(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(_Boom), compozy_store.transaction():
            workflow(compozy_store, workflow_exec_id="outer")
            with compozy_store.transaction():
                workflow(compozy_store, workflow_exec_id="inner")
                raise _Boom
        assert compozy_store.workflows.list_states() == []

    def test_work_inside_a_transaction_is_invisible_to_other_stores_until_commit(
        self, compozy_database: TestDatabase
    ) -> None:
        if not compozy_database.shareable:
            pytest.skip("needs a second Store on the same database (in-memory SQLite is private)")
        store, observer = compozy_database.store(), compozy_database.open()
        with store.transaction():
            workflow(store, workflow_exec_id="pending")
            assert observer.workflows.list_states() == []
        assert [s.workflow_exec_id for s in observer.workflows.list_states()] == ["pending"]

    def test_get_state_for_update_makes_another_writer_wait_for_commit(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        locked_task = task(compozy_store, wf)
        events: list[str] = []
        done = threading.Event()

        def other_writer() -> None:
            compozy_store.tasks.merge_usage(locked_task.task_exec_id, usage(prompt=7))
            events.append("other writer done")
            done.set()

        with compozy_store.transaction() as tx:
            tx.tasks.get_state_for_update(locked_task.task_exec_id)
            thread = threading.Thread(target=other_writer)
            thread.start()
            # Unlocked, the other write takes milliseconds; a second of waiting without it
            # finishing shows the lock holds it back (the test cannot pass without the lock).
            assert not done.wait(timeout=1.0), "the other writer got through the row lock"
            events.append("lock holder commits")
        thread.join()
        assert events == ["lock holder commits", "other writer done"]
        assert compozy_store.tasks.get_usage_summary(locked_task.task_exec_id) == usage(prompt=7)

    def test_closing_the_store_makes_later_calls_fail_with_store_unavailable(
        self, compozy_database: TestDatabase
    ) -> None:
        store = compozy_database.store()
        store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            store.workflows.list_states()

    @pytest.mark.compozy_backends(
        "sqlite", "sqlite-file", reason="busy_timeout is SQLite's; PostgreSQL writers queue"
    )
    def test_a_writer_kept_waiting_past_busy_timeout_gets_store_unavailable(
        self, compozy_database: TestDatabase
    ) -> None:
        impatient = compozy_database.open(busy_timeout=0.2)
        holder = compozy_database.open() if compozy_database.shareable else impatient
        with (
            _transaction_held_by_another_thread(
                holder, lambda: workflow(holder, workflow_exec_id="holder")
            ),
            pytest.raises(StoreUnavailable, match="busy"),
        ):
            workflow(impatient, workflow_exec_id="impatient")
        assert [s.workflow_exec_id for s in impatient.workflows.list_states()] == ["holder"]

    @pytest.mark.compozy_backends("sqlite-file", "postgres", reason="needs a connection pool")
    def test_an_exhausted_connection_pool_is_store_unavailable(
        self, compozy_database: TestDatabase
    ) -> None:
        store = compozy_database.open(
            pool_size=1, max_overflow=0, busy_timeout=0.2, connect_timeout=1
        )
        with (
            _transaction_held_by_another_thread(store),
            pytest.raises(StoreUnavailable, match="pool_size"),
        ):
            store.workflows.list_states()
        assert store.workflows.list_states() == []

    def test_an_unreachable_database_is_store_unavailable_and_an_unhealthy_store(
        self, compozy_backend: str, tmp_path: Path
    ) -> None:
        from compozy.config import DatabaseConfig
        from compozy.store import open_store

        if BACKEND_CLASSES[compozy_backend].has_server:
            config = DatabaseConfig(
                conn_string="postgresql://nobody:pw@127.0.0.1:1/none",
                auto_migrate=False,
                connect_timeout=2,
            )
            store = open_store(config)
            with pytest.raises(StoreUnavailable, match="cannot reach"):
                store.workflows.list_states()
            health = store.health()
            assert (health.ok, health.revision) == (False, None)
            assert "pw@" not in health.detail
            store.close()
        else:
            blocker = tmp_path / "a-file"
            blocker.write_text("not a directory")
            with pytest.raises(StoreUnavailable, match="cannot create"):
                open_store(DatabaseConfig(driver="sqlite", path=str(blocker / "x.db")))

    def test_a_database_without_the_schema_says_to_migrate(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        with pytest.raises(CompozyError, match="compozy migrate up"):
            store.workflows.list_states()
        health = store.health()
        assert (health.ok, health.revision) == (False, None)

    def test_health_reports_driver_location_and_schema_revision(
        self, compozy_database: TestDatabase
    ) -> None:
        store = compozy_database.store()
        health = store.health()
        assert health.ok
        assert health.driver == store.driver
        assert health.revision == health.head
        assert "password" not in health.location


@contextmanager
def _transaction_held_by_another_thread(
    store: Store, work: Callable[[], object] = lambda: None
) -> Iterator[None]:
    """While the block runs, another thread sits in ``store.transaction()`` after ``work``."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            work()
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        holding.wait(10)
        yield
    finally:
        release.set()
        thread.join()


def _state(exec_id: str) -> WorkflowState:
    return WorkflowState(workflow_exec_id=exec_id, workflow_id="wf", status=Status.RUNNING)

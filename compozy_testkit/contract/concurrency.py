"""Contract of concurrent use: many threads, one Store, no lost update, no "database is locked"."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from compozy.auth import User
from compozy.core import Component, Status
from compozy.errors import AlreadyBootstrapped
from compozy.store import Store
from compozy.task import TaskState
from compozy_testkit.contract._build import task, usage, workflow

THREADS = 10
ROUNDS = 5
T = TypeVar("T")


def _together(count: int, action: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``action(i)`` on ``count`` threads released at the same moment; collect outcomes."""
    barrier = threading.Barrier(count)

    def run(i: int) -> T | BaseException:
        barrier.wait()
        try:
            return action(i)
        except Exception as exc:  # noqa: BLE001 - returned so the test can assert on it
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


class ConcurrencyContract:
    """Thread safety of one shared Store, on whatever Store ``compozy_store`` gives."""

    def test_concurrent_workflow_merge_usage_loses_no_update(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)

        def merge(_i: int) -> None:
            for _ in range(ROUNDS):
                compozy_store.workflows.merge_usage(
                    wf.workflow_exec_id, usage(prompt=1, completion=2)
                )

        outcomes = _together(THREADS, merge)
        assert [o for o in outcomes if o is not None] == []
        stored = compozy_store.workflows.get_state(wf.workflow_exec_id).usage
        assert stored == usage(prompt=THREADS * ROUNDS, completion=2 * THREADS * ROUNDS)

    def test_concurrent_task_merge_usage_loses_no_update(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        target = task(compozy_store, wf)

        def merge(i: int) -> None:
            for _ in range(ROUNDS):
                compozy_store.tasks.merge_usage(target.task_exec_id, usage(model=f"m{i % 2}"))

        outcomes = _together(THREADS, merge)
        assert [o for o in outcomes if o is not None] == []
        summary = compozy_store.tasks.get_usage_summary(target.task_exec_id)
        assert summary is not None
        assert [(e.model, e.prompt_tokens) for e in summary.entries] == [
            ("m0", 10 * THREADS * ROUNDS // 2),
            ("m1", 10 * THREADS * ROUNDS // 2),
        ]

    def test_concurrent_task_upserts_of_one_workflow_all_land_without_lock_errors(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)

        def upsert(i: int) -> list[TaskState]:
            stored = []
            for round_ in range(ROUNDS):
                state = TaskState(
                    task_id=f"t{i}-{round_}",
                    workflow_id=wf.workflow_id,
                    workflow_exec_id=wf.workflow_exec_id,
                    component=Component.TASK,
                    status=Status.RUNNING,
                    input={"i": i, "round": round_},
                )
                stored.append(compozy_store.tasks.upsert_state(state))
                state.status = Status.SUCCESS
                stored.append(compozy_store.tasks.upsert_state(state))
            return stored

        outcomes = _together(THREADS, upsert)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors == []
        tasks = compozy_store.tasks.list_tasks_in_workflow(wf.workflow_exec_id)
        assert len(tasks) == THREADS * ROUNDS
        assert {t.status for t in tasks.values()} == {Status.SUCCESS}

    def test_concurrent_complete_workflow_completes_once_and_agrees(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="only", status=Status.SUCCESS, output={"v": 1})
        outcomes = _together(
            THREADS, lambda _i: compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        )
        assert all(not isinstance(o, BaseException) for o in outcomes)
        assert {(o.status, str(o.output)) for o in outcomes} == {  # type: ignore[union-attr]
            (Status.SUCCESS, str({"only": {"output": {"v": 1}}}))
        }

    def test_concurrent_initial_admin_creation_makes_exactly_one_admin(
        self, compozy_store: Store
    ) -> None:
        outcomes = _together(
            THREADS,
            lambda i: compozy_store.auth.create_initial_admin_if_none(User(email=f"a{i}@x.io")),
        )
        created = [o for o in outcomes if isinstance(o, User)]
        refused = [o for o in outcomes if isinstance(o, AlreadyBootstrapped)]
        assert (len(created), len(refused)) == (1, THREADS - 1)
        assert [u.id for u in compozy_store.auth.list_users()] == [created[0].id]

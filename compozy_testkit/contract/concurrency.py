"""Contract of concurrent use: many threads, one Store, no lost update, no "database is locked".

The mixed workloads run multi-statement transactions (insert a task then lock its workflow,
lock a task then its workflow) through ``Store.run_in_transaction``, on threads sharing one
Store and in processes with a Store each on the same database: no error, no lost update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import pytest

from compozy.auth import User
from compozy.core import Component, Status
from compozy.errors import AlreadyBootstrapped, WorkflowNotReady
from compozy.store import Store, TransactionScope
from compozy.task import TaskFilter, TaskState
from compozy.usage import UsageSummary
from compozy_testkit.contract._build import task, together, usage, workflow
from compozy_testkit.contract._processes import PROCESSES, ProcessPool
from compozy_testkit.databases import TestDatabase

THREADS = 10
ROUNDS = 5
MIXED_ROUNDS = 10
"""Transactions per thread in the mixed workloads (THREADS threads, one shared Store)."""
PROCESS_ROUNDS = 25
"""Transactions per process in the mixed workloads (PROCESSES processes, a Store each)."""
T = TypeVar("T")
W = TypeVar("W")


# The mixed workloads: several statements in one transaction, run through
# Store.run_in_transaction as production code runs them. Each is a module-level function of
# (store, worker index, job) so that the same code runs on threads and, by reference, in
# spawned processes (compozy_testkit.contract._processes).


@dataclass(frozen=True)
class _Job:
    """What a worker of a mixed workload works on (picklable: ids and a count)."""

    workflow_id: str
    workflow_exec_id: str
    rounds: int
    task_exec_id: str | None = None  # the parent of the new tasks, or the task to lock


def _mixed_job(store: Store, rounds: int, **task_fields: Any) -> _Job:
    """A new running workflow for a mixed workload of ``rounds`` transactions a worker; with
    ``task_fields``, a task of it too: the parent of the new tasks, or the task to lock."""
    wf = workflow(store)
    shared = task(store, wf, **task_fields).task_exec_id if task_fields else None
    return _Job(wf.workflow_id, wf.workflow_exec_id, rounds, shared)


def _spent() -> UsageSummary:
    """The usage every transaction of a mixed workload merges."""
    return usage(prompt=1, completion=2)


def _spent_times(n: int) -> UsageSummary:
    return usage(prompt=n, completion=2 * n)


def _new_task(job: _Job, worker: int, round_: int) -> TaskState:
    return TaskState(
        task_id=f"w{worker}-r{round_}",
        workflow_id=job.workflow_id,
        workflow_exec_id=job.workflow_exec_id,
        parent_state_id=job.task_exec_id,
        component=Component.TASK,
        status=Status.RUNNING if (worker + round_) % 2 else Status.SUCCESS,
        input={"worker": worker, "round": round_},
    )


def _insert_and_merge(tx: TransactionScope, state: TaskState) -> None:
    # On PostgreSQL the insert's foreign-key check takes FOR KEY SHARE on the workflow row (and
    # on the parent task's), which merge_usage then locks for update: the deadlock shape.
    tx.tasks.upsert_state(state)
    tx.workflows.merge_usage(state.workflow_exec_id, _spent())


def _insert_tasks_merging_usage(store: Store, worker: int, job: _Job) -> int:
    """Workload 1: each transaction inserts a new task, then merges usage into its workflow."""
    for round_ in range(job.rounds):
        store.run_in_transaction(partial(_insert_and_merge, state=_new_task(job, worker, round_)))
    return job.rounds


def _insert_children_trying_to_complete(store: Store, worker: int, job: _Job) -> int:
    """Workload 2: insert a child of the running top-level task (and merge usage) in one
    transaction, then try to complete the workflow, which must refuse; returns the refusals."""
    refused = 0
    for round_ in range(job.rounds):
        store.run_in_transaction(partial(_insert_and_merge, state=_new_task(job, worker, round_)))
        try:
            state = store.workflows.complete_workflow(job.workflow_exec_id)
        except WorkflowNotReady:
            refused += 1
        else:
            raise AssertionError(
                f"complete_workflow made {job.workflow_exec_id} {state.status.value} while its "
                f"top-level task {job.task_exec_id} was running"
            )
    return refused


def _count_under_lock(tx: TransactionScope, job: _Job) -> int:
    assert job.task_exec_id is not None
    locked = tx.tasks.get_state_for_update(job.task_exec_id)
    seen = int((locked.output or {})["count"])
    locked.output = {"count": seen + 1}
    tx.tasks.upsert_state(locked)  # writes back the usage read under the lock: still current
    tx.tasks.merge_usage(job.task_exec_id, _spent())
    tx.workflows.merge_usage(job.workflow_exec_id, _spent())
    return seen


def _count_under_lock_merging_usage(store: Store, _worker: int, job: _Job) -> list[int]:
    """Workload 3: lock one shared task, bump the counter in its output, merge usage into
    it and into its workflow; returns the counter values this worker read."""
    return [
        store.run_in_transaction(partial(_count_under_lock, job=job)) for _ in range(job.rounds)
    ]


def _on_threads(store: Store, target: Callable[[Store, int, _Job], W], job: _Job) -> list[W]:
    """``target`` on THREADS threads sharing ``store``; fails with every error raised."""
    outcomes = together(THREADS, lambda i: target(store, i, job))
    errors = [f"thread {i}: {o!r}" for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert errors == [], "\n".join(errors)
    return [o for o in outcomes if not isinstance(o, BaseException)]


def _on_processes(
    database: TestDatabase,
    processes: ProcessPool,
    target: Callable[[Store, int, _Job], W],
    job: _Job,
) -> list[W]:
    """``target`` in PROCESSES processes, a Store each; fails with every error reported."""
    assert database.config is not None
    outcomes = processes.run(database.config, target, job)
    assert outcomes.errors == [], "\n".join(outcomes.errors)
    assert len(outcomes.values) == PROCESSES, outcomes
    return outcomes.values


def _shared_store(database: TestDatabase) -> Store:
    """The test's Store, if other processes can open the same database; else skip."""
    if not database.shareable:
        pytest.skip(
            "needs other processes on the same database "
            "(in-memory SQLite is private to one process)"
        )
    return database.store()


def _assert_all_inserted(store: Store, job: _Job, workers: int) -> None:
    """Every task the workers inserted is stored, once, and so is every usage merge."""
    expected = [
        _new_task(job, worker, round_) for worker in range(workers) for round_ in range(job.rounds)
    ]
    stored = [
        t
        for t in store.tasks.list_states(TaskFilter(workflow_exec_id=job.workflow_exec_id))
        if t.task_exec_id != job.task_exec_id
    ]
    assert len(stored) == len(expected), f"{len(stored)} tasks stored, not {len(expected)}"
    found = {t.task_id: (t.status, t.parent_state_id, t.input) for t in stored}
    wanted = {t.task_id: (t.status, t.parent_state_id, t.input) for t in expected}
    wrong = {k: found.get(k) for k in found.keys() | wanted.keys() if found.get(k) != wanted.get(k)}
    assert wrong == {}, f"tasks missing (None) or stored wrong: {wrong}"
    total = store.workflows.get_state(job.workflow_exec_id).usage
    assert total == _spent_times(len(expected)), f"{len(expected)} merges, usage {total}"


def _assert_completes_once_parent_is_done(store: Store, job: _Job, refused: list[int]) -> None:
    """The workflow is still running; with its top-level task done, it completes with all."""
    assert job.task_exec_id is not None
    workers = len(refused)
    status = store.workflows.get_state(job.workflow_exec_id).status
    assert status is Status.RUNNING, f"the workflow became {status.value}"
    _assert_all_inserted(store, job, workers)
    parent = store.tasks.get_state(job.task_exec_id)
    parent.status = Status.SUCCESS
    store.tasks.upsert_state(parent)
    done = store.workflows.complete_workflow(job.workflow_exec_id)
    stored = store.workflows.get_state(job.workflow_exec_id)
    assert (done.status, stored.status) == (Status.SUCCESS, Status.SUCCESS), (done, stored)
    children = {t.task_id for t in store.tasks.list_children(parent.task_exec_id)}
    assert len(children) == workers * job.rounds, f"{len(children)} children"
    assert set(stored.tasks) == {parent.task_id, *children}, sorted(stored.tasks)
    assert stored.output == {parent.task_id: parent.output}, stored.output
    assert stored.usage == _spent_times(workers * job.rounds), stored.usage


def _assert_counted(store: Store, job: _Job, seen: list[list[int]]) -> None:
    """Each transaction read the count the one before it wrote: no update was lost."""
    assert job.task_exec_id is not None
    n = sum(len(s) for s in seen)
    counts = sorted(c for s in seen for c in s)
    assert counts == list(range(n)), f"counts read under the lock: {counts}"
    output = store.tasks.get_state(job.task_exec_id).output
    assert output == {"count": n}, f"{n} increments, stored {output}"
    task_usage = store.tasks.get_usage_summary(job.task_exec_id)
    assert task_usage == _spent_times(n), f"{n} merges, task usage {task_usage}"
    total = store.workflows.get_state(job.workflow_exec_id).usage
    assert total == _spent_times(n), f"{n} merges, workflow usage {total}"


@dataclass(frozen=True)
class _Workload(Generic[W]):
    """A mixed workload: ``work`` runs on every worker (module-level, so that spawned processes
    find it by reference) on a job with a task of ``task_fields`` if any; ``rounds_of`` reads
    how many rounds a worker's value reports, and ``check`` the stored outcome of them all."""

    work: Callable[[Store, int, _Job], W]
    rounds_of: Callable[[W], int]
    check: Callable[[Store, _Job, list[W]], None]
    task_fields: Mapping[str, Any] = field(default_factory=dict)


_WORKLOADS: dict[str, _Workload[Any]] = {
    "task-insert-then-workflow-merge-usage": _Workload(
        _insert_tasks_merging_usage,
        rounds_of=lambda done: done,
        check=lambda store, job, done: _assert_all_inserted(store, job, len(done)),
    ),
    "complete-workflow-racing-child-task-upserts": _Workload(
        _insert_children_trying_to_complete,
        rounds_of=lambda refused: refused,  # every round's try to complete is refused
        check=_assert_completes_once_parent_is_done,
        task_fields={"task_id": "parent", "status": Status.RUNNING},
    ),
    "locked-task-update-and-merge-usage": _Workload(
        _count_under_lock_merging_usage,
        rounds_of=len,
        check=_assert_counted,
        task_fields={"task_id": "shared", "output": {"count": 0}},
    ),
}


class ConcurrencyContract:
    """Thread safety of one shared Store, on whatever Store ``compozy_store`` gives;
    ``test_mixed_workload_in_processes`` takes ``compozy_database`` and opens compozy's own
    Store per process."""

    @pytest.fixture(scope="class")
    @classmethod
    def compozy_contract_processes(cls) -> Iterator[ProcessPool]:
        """PROCESSES spawned processes shared by the class's tests (spawning costs seconds)."""
        with ProcessPool(PROCESSES) as pool:
            yield pool

    def test_concurrent_workflow_merge_usage_loses_no_update(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)

        def merge(_i: int) -> None:
            for _ in range(ROUNDS):
                compozy_store.workflows.merge_usage(
                    wf.workflow_exec_id, usage(prompt=1, completion=2)
                )

        outcomes = together(THREADS, merge)
        assert [o for o in outcomes if o is not None] == []
        stored = compozy_store.workflows.get_state(wf.workflow_exec_id).usage
        assert stored == usage(prompt=THREADS * ROUNDS, completion=2 * THREADS * ROUNDS)

    def test_concurrent_task_merge_usage_loses_no_update(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        target = task(compozy_store, wf)

        def merge(i: int) -> None:
            for _ in range(ROUNDS):
                compozy_store.tasks.merge_usage(target.task_exec_id, usage(model=f"m{i % 2}"))

        outcomes = together(THREADS, merge)
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

        outcomes = together(THREADS, upsert)
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
        outcomes = together(
            THREADS, lambda _i: compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        )
        assert all(not isinstance(o, BaseException) for o in outcomes)
        assert {(o.status, str(o.output)) for o in outcomes} == {  # type: ignore[union-attr]
            (Status.SUCCESS, str({"only": {"v": 1}}))
        }

    def test_concurrent_initial_admin_creation_makes_exactly_one_admin(
        self, compozy_store: Store
    ) -> None:
        outcomes = together(
            THREADS,
            lambda i: compozy_store.auth.create_initial_admin_if_none(User(email=f"a{i}@x.io")),
        )
        created = [o for o in outcomes if isinstance(o, User)]
        refused = [o for o in outcomes if isinstance(o, AlreadyBootstrapped)]
        assert (len(created), len(refused)) == (1, THREADS - 1)
        assert [u.id for u in compozy_store.auth.list_users()] == [created[0].id]

    # Mixed workloads: multi-statement transactions through Store.run_in_transaction, on
    # THREADS threads sharing one Store, then in PROCESSES processes with a Store each.

    @pytest.mark.parametrize("workload", list(_WORKLOADS.values()), ids=list(_WORKLOADS))
    def test_mixed_workload_on_threads(
        self, compozy_store: Store, workload: _Workload[Any]
    ) -> None:
        job = _mixed_job(compozy_store, MIXED_ROUNDS, **workload.task_fields)
        values = _on_threads(compozy_store, workload.work, job)
        assert [workload.rounds_of(v) for v in values] == [MIXED_ROUNDS] * THREADS
        workload.check(compozy_store, job, values)

    @pytest.mark.parametrize("workload", list(_WORKLOADS.values()), ids=list(_WORKLOADS))
    def test_mixed_workload_in_processes(
        self,
        compozy_database: TestDatabase,
        compozy_contract_processes: ProcessPool,
        workload: _Workload[Any],
    ) -> None:
        store = _shared_store(compozy_database)
        job = _mixed_job(store, PROCESS_ROUNDS, **workload.task_fields)
        values = _on_processes(compozy_database, compozy_contract_processes, workload.work, job)
        assert [workload.rounds_of(v) for v in values] == [PROCESS_ROUNDS] * PROCESSES
        workload.check(store, job, values)

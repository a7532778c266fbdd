"""The engine around executions: claims, wait, resume after a dead worker, cancel, close."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from compozy.core import Component, Status
from compozy.engine import Engine, executor
from compozy.errors import CompozyError, ExecutionFinished
from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy.workflow import Claim, WorkflowFilter, WorkflowState, WorkflowSummary

from . import tools_for_tests
from .conftest import Define, MakeEngine

GATED = """
id: gated
tasks:
  - {id: hold, tool: "TOOLS:gate", with: {name: "{{ input.gate }}"}}
  - {id: after, tool: echo, with: {done: true}}
"""


def test_start_returns_before_the_work_finishes(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str
) -> None:
    engine = make_engine(define(GATED))

    exec_id = engine.start("gated", {"gate": gate_name})

    # The gate is closed, so the execution cannot have finished: it is queued or running.
    meanwhile = compozy_store.workflows.get_state(exec_id)
    assert meanwhile.status in (Status.PENDING, Status.RUNNING)
    assert "after" not in meanwhile.tasks
    tools_for_tests.open_gate(gate_name)
    final = engine.wait(exec_id, timeout=30)
    assert final.status is Status.SUCCESS
    assert final.tasks["after"].output == {"done": True}


def test_executions_beyond_the_pool_size_stay_pending_until_a_worker_frees(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str
) -> None:
    engine = make_engine(define(GATED), max_concurrent_workflows=1)
    first = engine.start("gated", {"gate": gate_name})
    second = engine.start("gated", {"gate": gate_name})

    # The only worker is held by `first` (its gate is closed), so `second` cannot have started.
    queued = compozy_store.workflows.get_state(second)
    assert queued.status is Status.PENDING
    assert queued.tasks == {}
    tools_for_tests.open_gate(gate_name)
    assert engine.wait(first, timeout=30).status is Status.SUCCESS
    assert engine.wait(second, timeout=30).status is Status.SUCCESS


def test_wait_raises_timeout_error_while_not_terminal(
    define: Define, make_engine: MakeEngine, gate_name: str
) -> None:
    engine = make_engine(define(GATED))
    exec_id = engine.start("gated", {"gate": gate_name})

    with pytest.raises(TimeoutError, match=exec_id):
        engine.wait(exec_id, timeout=0.05)

    tools_for_tests.open_gate(gate_name)
    assert engine.wait(exec_id, timeout=30).status is Status.SUCCESS


def test_wait_follows_an_execution_started_by_another_engine(
    define: Define, make_engine: MakeEngine, gate_name: str
) -> None:
    definitions = define(GATED)
    runner = make_engine(definitions)
    watcher = make_engine(definitions)
    exec_id = runner.start("gated", {"gate": gate_name})

    with pytest.raises(TimeoutError):
        watcher.wait(exec_id, timeout=0.05)
    tools_for_tests.open_gate(gate_name)

    assert watcher.wait(exec_id, timeout=30).status is Status.SUCCESS


def test_ten_executions_started_at_once_all_succeed(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    # Every execution writes from several threads at once (the collection runs in parallel):
    # on a SQLite file this is many writers contending for the database lock.
    engine = make_engine(
        define(
            """
            id: busy
            tasks:
              - {id: first, tool: echo, with: {n: "{{ input.n }}"}}
              - id: each
                type: collection
                items: "{{ range(4) }}"
                task: {id: one, tool: "TOOLS:report_usage", with: {tokens: "{{ item }}"}}
              - {id: last, tool: sleep, with: {seconds: 0.01}}
            """
        ),
        max_concurrent_workflows=10,
    )
    barrier = threading.Barrier(10)

    def start(n: int) -> str:
        barrier.wait()
        return engine.start("busy", {"n": n})

    with ThreadPoolExecutor(10) as starters:
        exec_ids = list(starters.map(start, range(10)))

    finals = [engine.wait(exec_id, timeout=120) for exec_id in exec_ids]
    assert len(set(exec_ids)) == 10
    assert [f.status for f in finals] == [Status.SUCCESS] * 10
    assert sorted(f.tasks["first"].output["n"] for f in finals) == list(range(10))  # type: ignore[index]
    for final in finals:
        tasks = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=final.workflow_exec_id))
        assert len(tasks) == 3 + 4
        assert final.usage is not None
        assert final.usage.entries[0].prompt_tokens == 0 + 1 + 2 + 3


# --- recovery, fencing and cancel -------------------------------------------------------------

CHAINED = """
id: chained
tasks:
  - {id: first, tool: echo, with: {n: 1}}
  - {id: second, tool: "TOOLS:add", with: {a: "{{ tasks.first.output.n }}", b: 10}}
"""


def _orphan(store: Store, workflow_id: str, *, lease: float = 0.05) -> tuple[Claim, TaskState]:
    """An execution as a worker that died mid-run leaves it: claimed under a short lease,
    its first task SUCCESS with an output, its second RUNNING."""
    state = store.workflows.upsert_state(
        WorkflowState(workflow_id=workflow_id, status=Status.PENDING)
    )
    claim = store.queue.claim_execution(state.workflow_exec_id, "dead-worker", lease=lease)
    first = store.tasks.upsert_state(
        TaskState(
            task_id="first",
            workflow_id=workflow_id,
            workflow_exec_id=state.workflow_exec_id,
            component=Component.TOOL,
            status=Status.SUCCESS,
            tool_id="echo",
            output={"n": 5},
        )
    )
    store.tasks.upsert_state(
        TaskState(
            task_id="second",
            workflow_id=workflow_id,
            workflow_exec_id=state.workflow_exec_id,
            component=Component.TOOL,
            status=Status.RUNNING,
            tool_id="x",
        )
    )
    time.sleep(lease * 2)  # the lease runs out: nobody renews it
    return claim, first


def _summary(store: Store, exec_id: str) -> WorkflowSummary:
    return store.workflows.list_page(WorkflowFilter(workflow_exec_id=exec_id)).items[0]


def test_an_execution_whose_lease_expired_is_resumed_keeping_finished_tasks(
    define: Define, make_engine: MakeEngine, compozy_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    claim, first = _orphan(compozy_store, "chained")
    engine = make_engine(define(CHAINED))

    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        engine.serve()
        final = engine.wait(claim.workflow_exec_id, timeout=30)

    assert final.status is Status.SUCCESS
    # The finished task was kept, row and all, and its output fed the next task's template.
    assert final.tasks["first"].task_exec_id == first.task_exec_id
    assert final.tasks["first"].updated_at == first.updated_at
    assert final.tasks["second"].output == {"sum": 15}
    rows = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=claim.workflow_exec_id))
    assert [t.task_id for t in rows] == ["first", "second"]  # re-run on its own row
    summary = _summary(compozy_store, claim.workflow_exec_id)
    assert (summary.worker_id, summary.claim_count) == (engine.worker_id, 2)
    assert "dead-worker" in caplog.text


def test_recovery_fail_ends_an_orphan_failed_interrupted(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    claim, _ = _orphan(compozy_store, "chained")
    engine = make_engine(define(CHAINED), recovery="fail")

    engine.serve()
    final = engine.wait(claim.workflow_exec_id, timeout=30)

    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error["code"] == "INTERRUPTED"
    assert "dead-worker" in final.error["message"]
    assert final.tasks["first"].status is Status.SUCCESS
    assert final.tasks["second"].status is Status.FAILED
    assert final.tasks["second"].error["code"] == "INTERRUPTED"  # type: ignore[index]


def test_a_live_lease_of_another_worker_is_left_alone(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    state = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="chained", status=Status.PENDING)
    )
    compozy_store.queue.claim_execution(state.workflow_exec_id, "busy-worker", lease=60)
    engine = make_engine(define(CHAINED), lease=0.4, poll_interval=0.05)

    engine.serve()
    # Several claim rounds of the serving engine go by.
    with pytest.raises(TimeoutError):
        engine.wait(state.workflow_exec_id, timeout=0.5)

    summary = _summary(compozy_store, state.workflow_exec_id)
    assert (summary.status, summary.worker_id, summary.claim_count) == (
        Status.RUNNING,
        "busy-worker",
        1,
    )
    assert summary.task_status_counts == {}


def test_a_worker_that_lost_its_claim_stops_and_another_finishes(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    gate_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    definitions = define(GATED)
    # One slot, which the blocked run keeps busy: the first worker cannot claim it back.
    first = make_engine(definitions, max_concurrent_workflows=1)
    exec_id = first.start("gated", {"gate": gate_name})
    _until_running(compozy_store, exec_id, "hold")
    held = _summary(compozy_store, exec_id)
    assert held.worker_id == first.worker_id
    # Taken away while its tool runs (as a release by the same claim would): the next write
    # of the first worker is refused, and the task runs again elsewhere (at least once).
    compozy_store.queue.release(
        Claim(
            workflow_exec_id=exec_id,
            worker_id=first.worker_id,
            claim_count=held.claim_count,
            lease_expires_at=held.lease_expires_at or datetime.now(UTC),
        )
    )
    second = make_engine(definitions)

    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        second.serve()
        _until(lambda: _summary(compozy_store, exec_id).worker_id == second.worker_id)
        tools_for_tests.open_gate(gate_name)
        final = second.wait(exec_id, timeout=30)
        first.close()

    assert final.status is Status.SUCCESS
    assert _summary(compozy_store, exec_id).worker_id == second.worker_id
    assert f"Stopped execution {exec_id}" in caplog.text
    hold = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id, task_id="hold"))
    assert [t.status for t in hold] == [Status.SUCCESS]


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in 30 s"
        time.sleep(0.01)


def _until_running(store: Store, exec_id: str, task_id: str) -> None:
    def running() -> bool:
        tasks = store.workflows.get_state(exec_id).tasks
        return task_id in tasks and tasks[task_id].status is Status.RUNNING

    _until(running)


def test_cancel_ends_a_pending_execution_at_once(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(define(CHAINED))
    state = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="chained", status=Status.PENDING)
    )

    canceled = engine.cancel(state.workflow_exec_id)

    assert canceled.status is Status.CANCELED
    assert canceled.error["code"] == "CANCELED"  # type: ignore[index]
    with pytest.raises(ExecutionFinished, match=state.workflow_exec_id):
        engine.cancel(state.workflow_exec_id)


@pytest.mark.parametrize("through", ["engine", "store"])
def test_cancel_of_a_running_execution_starts_no_new_task(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str, through: str
) -> None:
    engine = make_engine(define(GATED), poll_interval=0.1)
    exec_id = engine.start("gated", {"gate": gate_name})
    _until_running(compozy_store, exec_id, "hold")

    if through == "engine":
        requested = engine.cancel(exec_id)
    else:  # as the API or another machine does: the owning worker sees it at its next renewal
        requested = compozy_store.queue.request_cancel(exec_id)
    assert requested.status is Status.RUNNING
    time.sleep(0.3)  # past a renewal: the worker has seen the request by now
    tools_for_tests.open_gate(gate_name)
    final = engine.wait(exec_id, timeout=30)

    assert final.status is Status.CANCELED
    assert final.error["code"] == "CANCELED"  # type: ignore[index]
    assert final.tasks["hold"].status is Status.SUCCESS  # it was running: it finished
    assert "after" not in final.tasks  # never started


def test_close_without_wait_releases_running_executions_for_another_worker(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str
) -> None:
    definitions = define(GATED)
    engine = make_engine(definitions, max_concurrent_workflows=1)
    running = engine.start("gated", {"gate": gate_name})
    queued = engine.start("gated", {"gate": gate_name})
    _until_running(compozy_store, running, "hold")

    engine.close(wait=False)

    released = _summary(compozy_store, running)
    assert (released.status, released.worker_id) == (Status.PENDING, None)
    assert released.task_status_counts == {Status.PENDING: 1}  # "hold" waits to run again
    assert compozy_store.workflows.get_state(queued).status is Status.PENDING
    tools_for_tests.open_gate(gate_name)
    successor = make_engine(definitions)
    successor.serve()
    assert successor.wait(running, timeout=30).status is Status.SUCCESS
    assert successor.wait(queued, timeout=30).status is Status.SUCCESS


# --- engine errors and callbacks ----------------------------------------------------------------


def test_an_engine_bug_marks_the_execution_and_its_running_tasks_failed(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(define("id: w\ntasks: [{id: a, tool: echo}, {id: b, tool: echo}]\n"))
    original = executor.WorkflowRun._handle

    def broken(self: executor.WorkflowRun, task: object, *args: object) -> object:
        if getattr(task, "id", None) == "b":
            raise RuntimeError("engine bug")
        return original(self, task, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(executor.WorkflowRun, "_handle", broken)

    with caplog.at_level(logging.ERROR, logger="compozy.engine"):
        final = engine.run("w")

    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error["code"] == "ENGINE_ERROR"
    assert "engine bug" in final.error["message"]
    assert final.tasks["a"].status is Status.SUCCESS
    assert final.tasks["b"].status is Status.FAILED
    assert final.tasks["b"].error["code"] == "ENGINE_ERROR"  # type: ignore[index]
    assert "engine bug" in caplog.text
    assert compozy_store.workflows.get_state(final.workflow_exec_id).status is Status.FAILED


def test_a_failing_on_task_callback_does_not_fail_the_run(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(define("id: w\ntasks: [{id: a, tool: echo}]\n"))

    def explode(_task: TaskState) -> None:
        raise ValueError("display broke")

    assert engine.run("w", on_task=explode).status is Status.SUCCESS


# --- definitions, close -------------------------------------------------------------------------


def test_definitions_are_read_only(define: Define, make_engine: MakeEngine) -> None:
    definitions = define(GATED)
    engine = make_engine(definitions)

    assert isinstance(engine.definitions, MappingProxyType)
    assert list(engine.definitions) == ["gated"]
    definitions.clear()
    assert list(engine.definitions) == ["gated"]  # the engine keeps its own copy


def test_a_closed_engine_refuses_new_work(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(define(GATED))
    engine.close()

    with pytest.raises(CompozyError, match="closed"):
        engine.start("gated", {"gate": "x"})
    with pytest.raises(CompozyError, match="closed"):
        engine.run("gated", {"gate": "x"})
    assert compozy_store.workflows.list_states() == []


def test_engine_is_a_context_manager(define: Define, compozy_store: Store) -> None:
    with Engine(compozy_store, define("id: w\ntasks: [{id: a, tool: echo}]\n")) as engine:
        exec_id = engine.start("w")

    # Leaving the block waited for the work.
    assert compozy_store.workflows.get_state(exec_id).status is Status.SUCCESS


def test_pool_sizes_must_be_positive(compozy_store: Store) -> None:
    with pytest.raises(CompozyError, match="max_concurrent_workflows"):
        Engine(compozy_store, {}, max_concurrent_workflows=0)
    with pytest.raises(CompozyError, match="max_parallel_tasks"):
        Engine(compozy_store, {}, max_parallel_tasks=0)

"""The engine around executions: the pool, wait, recovery of dead executions, close."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

import pytest

from compozy.core import Component, Status
from compozy.engine import Engine, executor
from compozy.errors import CompozyError
from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy.workflow import WorkflowState

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


# --- recovery -----------------------------------------------------------------------------------


def _orphan(store: Store, status: Status, task_statuses: list[Status]) -> WorkflowState:
    """Store an execution the way a process that died mid-run leaves it."""
    state = store.workflows.upsert_state(WorkflowState(workflow_id="gated", status=status))
    for index, task_status in enumerate(task_statuses):
        store.tasks.upsert_state(
            TaskState(
                task_id=f"task{index}",
                workflow_id="gated",
                workflow_exec_id=state.workflow_exec_id,
                component=Component.TOOL,
                status=task_status,
                tool_id="echo",
                output={"kept": True} if task_status is Status.SUCCESS else None,
            )
        )
    return state


def test_recover_interrupted_fails_dead_executions_and_leaves_live_ones(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    gate_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(define(GATED), max_concurrent_workflows=1)
    live = engine.start("gated", {"gate": gate_name})
    queued = engine.start("gated", {"gate": gate_name})
    running = _orphan(compozy_store, Status.RUNNING, [Status.SUCCESS, Status.RUNNING])
    pending = _orphan(compozy_store, Status.PENDING, [])
    done = _orphan(compozy_store, Status.SUCCESS, [Status.SUCCESS])

    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        recovered = engine.recover_interrupted()

    assert sorted(recovered) == sorted([running.workflow_exec_id, pending.workflow_exec_id])
    assert "INTERRUPTED" in caplog.text
    for orphan in (running, pending):
        state = compozy_store.workflows.get_state(orphan.workflow_exec_id)
        assert state.status is Status.FAILED
        assert state.error is not None
        assert state.error["code"] == "INTERRUPTED"
    tasks = compozy_store.workflows.get_state(running.workflow_exec_id).tasks
    assert tasks["task0"].status is Status.SUCCESS
    assert tasks["task0"].output == {"kept": True}
    assert tasks["task1"].status is Status.FAILED
    assert tasks["task1"].error["code"] == "INTERRUPTED"  # type: ignore[index]
    assert compozy_store.workflows.get_state(done.workflow_exec_id).status is Status.SUCCESS
    # The engine's own executions, running and queued, are untouched and still finish.
    assert compozy_store.workflows.get_state(live).status in (Status.PENDING, Status.RUNNING)
    assert compozy_store.workflows.get_state(queued).status is Status.PENDING
    tools_for_tests.open_gate(gate_name)
    assert engine.wait(live, timeout=30).status is Status.SUCCESS
    assert engine.wait(queued, timeout=30).status is Status.SUCCESS


def test_recover_interrupted_with_nothing_to_recover(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(define(GATED))

    assert engine.recover_interrupted() == []


def test_a_new_engine_recovers_what_a_closed_one_left_running(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    definitions = define(GATED)
    orphan = _orphan(compozy_store, Status.RUNNING, [Status.RUNNING])
    first = make_engine(definitions)
    # The first engine never ran the orphan, so it counts as dead for any engine.
    second = make_engine(definitions)

    assert first.recover_interrupted() == [orphan.workflow_exec_id]
    assert second.recover_interrupted() == []


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


def test_close_without_wait_cancels_queued_executions(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str
) -> None:
    engine = make_engine(define(GATED), max_concurrent_workflows=1)
    running = engine.start("gated", {"gate": gate_name})
    queued = engine.start("gated", {"gate": gate_name})

    engine.close(wait=False)

    canceled = compozy_store.workflows.get_state(queued)
    assert canceled.status is Status.CANCELED
    assert canceled.error["code"] == "CANCELED"  # type: ignore[index]
    assert engine.wait(queued, timeout=1).status is Status.CANCELED
    tools_for_tests.open_gate(gate_name)
    assert engine.wait(running, timeout=30).status is Status.SUCCESS


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

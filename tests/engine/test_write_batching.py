"""Group-committed task writes: the same stored end state, RUNNING still seen for a slow tool,
progress counts from the start, resumption, and a claim lost with changes still queued."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from compozy.core import Component, ExecutionType, Status
from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy.workflow import Claim, WorkflowFilter, WorkflowState

from . import tools_for_tests
from .conftest import Define, MakeEngine

MIXED = """
id: mixed
tasks:
  - id: each
    type: collection
    items: "{{ range(30) | list }}"
    task: {id: one, tool: "TOOLS:report_usage", with: {tokens: "{{ item }}"}}
  - id: letters
    type: collection
    mode: sequential
    items: [a, b, c]
    task: {id: letter, tool: format, with: {template: "{{ item }}{{ index }}"}}
  - id: both
    type: parallel
    tasks:
      - id: chain
        type: composite
        tasks:
          - {id: c1, tool: echo, with: {n: 1}}
          - {id: c2, tool: "TOOLS:add", with: {a: "{{ tasks.c1.output.n }}", b: 2}}
      - {id: count, tool: echo, with: {n: "{{ tasks.each.output.results | length }}"}}
  - id: pick
    type: router
    condition: "{{ 'big' if tasks.count.output.n > 10 else 'small' }}"
    routes:
      big: {id: big, tool: echo, with: {size: big}}
      small: {id: small, tool: echo, with: {size: small}}
"""

BROKEN = """
id: broken
tasks:
  - id: both
    type: parallel
    tasks:
      - {id: ok, tool: echo, with: {n: 1}}
      - {id: bad, tool: fail, with: {message: boom}}
  - {id: never, tool: echo, with: {}}
"""


def _end_state(store: Store, exec_id: str) -> tuple[Any, list[tuple[Any, ...]]]:
    """What a run leaves, without ids and clocks: the workflow's status, output, error and
    usage, and every task row (by its path of task ids, in creation order) with its status,
    input, output, error, usage, component, type and tool."""
    workflow = store.workflows.get_state(exec_id)
    rows = store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id))
    path: dict[str, str] = {}
    for row in rows:  # parents come first: created before their children
        parent = path.get(row.parent_state_id or "", "")
        path[row.task_exec_id] = f"{parent}/{row.task_id}"
    tasks = [
        (
            path[row.task_exec_id],
            row.status,
            row.input,
            row.output,
            row.error,
            _usage(row.usage),
            row.component,
            row.execution_type,
            row.tool_id,
        )
        for row in rows
    ]
    error = None if workflow.error is None else dict(workflow.error, task_exec_id=None)
    top = (workflow.status, workflow.output, error, _usage(workflow.usage))
    return top, tasks


def _usage(summary: Any) -> list[tuple[Any, ...]] | None:
    if summary is None:
        return None
    return [
        (e.provider, e.model, e.prompt_tokens, e.completion_tokens, e.total_tokens)
        for e in summary.entries
    ]


@pytest.mark.parametrize("workflow", ["mixed", "broken"])
def test_coalesced_writes_store_the_same_end_state_as_writing_every_change(
    define: Define, make_engine: MakeEngine, compozy_store: Store, workflow: str
) -> None:
    """With an on_task callback every change is stored; without one, changes of a task that
    are queued together are stored as the last. Both leave the same rows."""
    engine = make_engine(define(MIXED if workflow == "mixed" else BROKEN))
    seen: list[TaskState] = []

    every_change = engine.run(workflow, on_task=seen.append)
    coalesced = engine.run(workflow)

    assert _end_state(compozy_store, coalesced.workflow_exec_id) == _end_state(
        compozy_store, every_change.workflow_exec_id
    )
    # Every row was reported at least once, and each task's last report is its stored end.
    last = {s.task_exec_id: s for s in seen}
    stored = compozy_store.tasks.list_states(
        TaskFilter(workflow_exec_id=every_change.workflow_exec_id)
    )
    assert {s.task_exec_id: (s.status, s.output) for s in stored} == {
        i: (s.status, s.output) for i, s in last.items()
    }


def test_the_stored_end_state_of_a_mixed_workflow(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(define(MIXED))

    final = engine.run("mixed")

    assert final.status is Status.SUCCESS
    assert final.output is not None
    assert final.output["each"] == {"results": [{"tokens": i} for i in range(30)]}
    assert final.output["letters"] == {"results": [{"text": "a0"}, {"text": "b1"}, {"text": "c2"}]}
    assert final.output["both"] == {"results": [{"sum": 3}, {"n": 30}]}
    assert final.output["pick"] == {"route": "big", "output": {"size": "big"}}
    assert final.usage is not None
    assert final.usage.entries[0].prompt_tokens == sum(range(30))
    rows = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=final.workflow_exec_id))
    assert len(rows) == 4 + 30 + 3 + 4 + 1  # the top level, the items, both's tree, the route
    assert {r.status for r in rows} == {Status.SUCCESS}
    assert all(r.error is None and r.output is not None for r in rows)
    each = final.tasks["each"]
    items = compozy_store.tasks.list_children(each.task_exec_id)
    # Item order is creation order, as a resumed run reads it back.
    assert [r.input for r in items] == [{"tokens": i} for i in range(30)]
    assert [r.usage.entries[0].prompt_tokens for r in items if r.usage] == list(range(30))
    created = [r.created_at for r in rows]
    assert len(set(created)) == len(created)  # no two rows of a run share a created_at
    top = [r.task_id for r in rows if r.parent_state_id is None]
    assert top == ["each", "letters", "both", "pick"]


def test_a_slow_tool_is_seen_running_while_its_quick_siblings_are_done(
    define: Define, make_engine: MakeEngine, compozy_store: Store, gate_name: str
) -> None:
    router = """
                  id: one
                  type: router
                  condition: "{{ 'slow' if item == 7 else 'quick' }}"
                  routes:
                    slow: {id: slow, tool: "TOOLS:gate", with: {name: "{{ input.gate }}"}}
                    quick: {id: quick, tool: echo, with: {i: "{{ item }}"}}"""
    engine = make_engine(define(_collection(20, router)))
    exec_id = engine.start("w", {"gate": gate_name})  # no on_task: changes are coalesced

    def slow_running() -> bool:
        rows = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id, task_id="slow"))
        return bool(rows) and rows[0].status is Status.RUNNING

    _until(slow_running)
    _until(lambda: _statuses(compozy_store, exec_id, "quick") == [Status.SUCCESS] * 19)
    assert compozy_store.workflows.get_state(exec_id).tasks["each"].status is Status.RUNNING
    tools_for_tests.open_gate(gate_name)
    final = engine.wait(exec_id, timeout=30)
    assert final.status is Status.SUCCESS
    assert _statuses(compozy_store, exec_id, "slow") == [Status.SUCCESS]


def test_every_fan_out_child_is_stored_before_any_child_is_seen(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    """Progress counts are right from the start: the first time a child of the collection is
    reported, the store holds all of them, and every report is a state already stored."""
    engine = make_engine(define(_collection(40, '{id: one, tool: echo, with: {i: "{{ item }}"}}')))
    counts: list[int] = []
    behind: list[str] = []
    order = [Status.PENDING, Status.RUNNING, Status.SUCCESS]

    def check(task: TaskState) -> None:
        stored = compozy_store.tasks.get_state(task.task_exec_id)
        if order.index(stored.status) < order.index(task.status):
            behind.append(f"{task.task_id} reported {task.status}, stored {stored.status}")
        if task.task_id == "one" and not counts:
            counts.append(
                compozy_store.tasks.get_progress_info(task.parent_state_id or "").total_children
            )

    final = engine.run("w", on_task=check)

    assert final.status is Status.SUCCESS
    assert counts == [40]
    assert behind == []


def test_a_resumed_collection_keeps_its_finished_items_and_runs_the_rest_once(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    """As a worker that died mid-collection leaves it: items 0-4 SUCCESS, 5 RUNNING, the rest
    PENDING. The new worker runs items 5-9 once each, on their rows, and keeps 0-4 as they are."""
    key = uuid.uuid4().hex
    task = '{id: one, tool: "TOOLS:slow", with: {key: "KEY-{{ item }}", seconds: 0}}'
    engine = make_engine(define(_collection(10, task.replace("KEY", key))))
    state = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="w", status=Status.PENDING)
    )
    exec_id = state.workflow_exec_id
    compozy_store.queue.claim_execution(exec_id, "dead-worker", lease=0.05)

    def row(task_id: str, status: Status, **fields: Any) -> TaskState:
        return compozy_store.tasks.upsert_state(
            TaskState(
                task_id=task_id,
                workflow_id="w",
                workflow_exec_id=exec_id,
                status=status,
                **fields,
            )
        )

    parent = row(
        "each", Status.RUNNING, component=Component.TASK, execution_type=ExecutionType.COLLECTION
    )
    start = datetime.now(UTC)
    items = [
        row(
            "one",
            Status.SUCCESS if i < 5 else Status.RUNNING if i == 5 else Status.PENDING,
            parent_state_id=parent.task_exec_id,
            component=Component.TOOL,
            tool_id="slow",
            output={"slept": 0, "kept": i} if i < 5 else None,
            created_at=start + timedelta(microseconds=i),
        )
        for i in range(10)
    ]
    time.sleep(0.1)  # the lease runs out: nobody renews it

    engine.serve()
    final = engine.wait(exec_id, timeout=30)

    assert final.status is Status.SUCCESS
    assert final.output == {
        "each": {"results": [{"slept": 0, "kept": i} for i in range(5)] + [{"slept": 0}] * 5}
    }
    stored = compozy_store.tasks.list_children(parent.task_exec_id)
    assert [r.task_exec_id for r in stored] == [r.task_exec_id for r in items]
    assert [r.updated_at for r in stored[:5]] == [r.updated_at for r in items[:5]]
    assert {r.status for r in stored} == {Status.SUCCESS}
    calls = {i: len(tools_for_tests.CALLS.get(f"{key}-{i}", [])) for i in range(10)}
    assert calls == {i: 0 if i < 5 else 1 for i in range(10)}


def test_a_claim_lost_with_changes_queued_stops_the_run_and_stores_nothing_after_it(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The on_task callback holds the writer after its first commit while the collection's
    items go on queueing changes; the claim is taken away meanwhile. The next batch is refused
    whole (ClaimLost), the run stops without completing, and another worker finishes it."""
    definitions = define(
        """
        id: w
        tasks:
          - id: each
            type: collection
            items: "{{ range(60) | list }}"
            task: {id: one, tool: echo, with: {i: "{{ item }}"}}
          - {id: after, tool: echo, with: {done: true}}
        """
    )
    first = make_engine(definitions)
    held = threading.Event()
    go_on = threading.Event()

    def hold_the_writer(task: TaskState) -> None:
        if not held.is_set():
            held.set()
            go_on.wait(30)

    exec_id = first.submit("w")
    running = threading.Thread(
        target=first.execute, args=(exec_id,), kwargs={"on_task": hold_the_writer}
    )
    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        running.start()
        assert held.wait(30)
        summary = compozy_store.workflows.list_page(WorkflowFilter(workflow_exec_id=exec_id)).items[
            0
        ]
        compozy_store.queue.release(
            Claim(
                workflow_exec_id=exec_id,
                worker_id=first.worker_id,
                claim_count=summary.claim_count,
                lease_expires_at=summary.lease_expires_at or datetime.now(UTC),
            )
        )
        before = _rows(compozy_store, exec_id)
        go_on.set()
        running.join(30)
    assert not running.is_alive()

    # The refused write (or the lease renewal, if it came first) stopped it.
    assert f"Stopped execution {exec_id}" in caplog.text or "held by another worker" in caplog.text
    assert _rows(compozy_store, exec_id) == before  # nothing written after the loss
    assert compozy_store.workflows.get_state(exec_id).status is Status.PENDING
    second = make_engine(definitions)
    second.serve()
    final = second.wait(exec_id, timeout=30)
    assert final.status is Status.SUCCESS
    assert final.output is not None
    assert final.output["each"] == {"results": [{"i": i} for i in range(60)]}
    assert len(_statuses(compozy_store, exec_id, "one")) == 60


def _collection(size: int, task: str) -> str:
    """Workflow ``w``: one parallel collection ``each`` over ``range(size)`` running ``task``
    (a flow mapping, or a block of lines indented deeper than ``task:``)."""
    items = f'"{{{{ range({size}) | list }}}}"'
    return (
        f"id: w\ntasks:\n  - id: each\n    type: collection\n    items: {items}\n    task: {task}\n"
    )


def _rows(store: Store, exec_id: str) -> dict[str, tuple[Status, Any, Any]]:
    rows = store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id))
    return {r.task_exec_id: (r.status, r.output, r.updated_at) for r in rows}


def _statuses(store: Store, exec_id: str, task_id: str) -> list[Status]:
    rows = store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id, task_id=task_id))
    return [r.status for r in rows]


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in 30 s"
        time.sleep(0.01)


@pytest.mark.parametrize("on_task", [False, True], ids=["coalescing", "notifying"])
def test_a_batch_retried_after_store_busy_merges_its_usage_once(
    compozy_store: Store, on_task: bool
) -> None:
    """run_in_transaction runs a batch again after StoreBusy; the rolled-back attempt's usage
    merge must not reach the second attempt through the queued state."""
    from compozy.engine.executor import _Change, _Writes
    from compozy.errors import StoreBusy
    from compozy.usage import UsageEntry, UsageSummary

    exec_id = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="w", status=Status.PENDING)
    ).workflow_exec_id
    claim = compozy_store.queue.claim_execution(exec_id, "worker", lease=30.0)
    writes = _Writes(compozy_store, claim, lambda _state: None, lambda: not on_task)
    state = TaskState(
        task_id="t",
        workflow_id="w",
        workflow_exec_id=exec_id,
        component=Component.TASK,
        status=Status.SUCCESS,
        output={},
    )
    spent = UsageSummary(entries=[UsageEntry(provider="p", model="m", prompt_tokens=7)])
    change = _Change(state, [spent])
    attempts: list[int] = []

    def write_then_fail_once(tx: Any) -> list[TaskState]:
        heard = writes._write([change], on_task, tx)
        attempts.append(1)
        if len(attempts) == 1:
            raise StoreBusy("the first attempt loses a conflict")
        return heard

    heard = compozy_store.run_in_transaction(write_then_fail_once)
    assert len(attempts) == 2
    stored = compozy_store.tasks.get_state(state.task_exec_id).usage
    assert stored is not None
    assert [e.prompt_tokens for e in stored.entries] == [7]
    flow = compozy_store.workflows.get_state(exec_id).usage
    assert flow is not None
    assert [e.prompt_tokens for e in flow.entries] == [7]
    if on_task:
        assert [e.prompt_tokens for e in heard[0].usage.entries] == [7]  # type: ignore[union-attr]

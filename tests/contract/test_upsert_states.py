"""``tasks.upsert_states``: the store's batch of upserts (the engine's group commit) stores what
``upsert_state`` one by one would, all or none, on every backend."""

from __future__ import annotations

from dataclasses import replace

import pytest

from compozy.core import Component, Status, new_id
from compozy.errors import ConstraintViolation, ValidationError
from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.contract._build import workflow
from compozy_testkit.queries import QueryLog


def _state(wf: WorkflowState, task_id: str, parent: TaskState | None = None) -> TaskState:
    return TaskState(
        task_exec_id=new_id(),
        task_id=task_id,
        workflow_id=wf.workflow_id,
        workflow_exec_id=wf.workflow_exec_id,
        parent_state_id=None if parent is None else parent.task_exec_id,
        component=Component.TASK,
        status=Status.PENDING,
        input={"n": task_id},
    )


def _stored(store: Store, wf: WorkflowState) -> list[TaskState]:
    return store.tasks.list_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id))


def _view(store: Store, wf: WorkflowState) -> list[tuple[object, ...]]:
    """The stored rows of ``wf`` without their ids: task, parent task, status, input, output."""
    rows = _stored(store, wf)
    task_ids = {row.task_exec_id: row.task_id for row in rows}
    return sorted(
        (r.task_id, task_ids.get(r.parent_state_id or ""), r.status.value, r.input, r.output)
        for r in rows
    )


def test_a_batch_stores_what_one_upsert_at_a_time_stores(compozy_store: Store) -> None:
    single, batch = workflow(compozy_store), workflow(compozy_store)
    for wf in (single, batch):
        parent = _state(wf, "parent")
        children = [_state(wf, f"child-{n}", parent) for n in range(30)]
        done = replace(parent, status=Status.SUCCESS, output={"ok": True}, created_at=None)
        changes = [parent, *children, done]  # a parent, its children, then the parent again
        if wf is single:
            for change in changes:
                compozy_store.tasks.upsert_state(change)
            continue
        returned = compozy_store.tasks.upsert_states(changes)
        # One state per id, in the order each id first came, as stored now.
        assert [s.task_exec_id for s in returned] == [s.task_exec_id for s in changes[:-1]]
        stored = {s.task_exec_id: s for s in _stored(compozy_store, wf)}
        assert returned == [stored[s.task_exec_id] for s in returned]
        assert returned[0].status is Status.SUCCESS
    assert _view(compozy_store, batch) == _view(compozy_store, single)
    assert len(_view(compozy_store, batch)) == 31


def test_an_id_twice_in_a_batch_keeps_its_first_created_at_and_its_last_state(
    compozy_store: Store,
) -> None:
    wf = workflow(compozy_store)
    first = _state(wf, "twice")
    (before,) = compozy_store.tasks.upsert_states([first])
    running = replace(first, status=Status.RUNNING, created_at=None)
    done = replace(first, status=Status.SUCCESS, output={"v": 2}, created_at=None)
    (after,) = compozy_store.tasks.upsert_states([running, done])
    assert after.status is Status.SUCCESS
    assert after.output == {"v": 2}
    assert after.created_at == before.created_at
    assert before.updated_at is not None
    assert after.updated_at is not None
    assert after.updated_at >= before.updated_at


def test_without_returning_nothing_is_read_back_and_every_row_is_stored(
    compozy_store: Store, compozy_queries: QueryLog
) -> None:
    wf = workflow(compozy_store)
    states = [_state(wf, f"t{n}") for n in range(5)]
    start = len(compozy_queries.queries)
    assert compozy_store.tasks.upsert_states(states, returning=False) == []
    sent = compozy_queries.queries[start:]
    assert all(q.lstrip().upper().startswith("INSERT") for q in sent), sent
    assert {s.task_exec_id for s in _stored(compozy_store, wf)} == {s.task_exec_id for s in states}
    assert compozy_store.tasks.upsert_states([]) == []


def test_a_missing_parent_is_named_and_nothing_of_the_batch_is_stored(
    compozy_store: Store,
) -> None:
    wf = workflow(compozy_store)
    parent = _state(wf, "parent")
    ok_child = _state(wf, "child", parent)  # its parent comes earlier in the same batch
    orphan = _state(wf, "orphan")
    orphan.parent_state_id = new_id()
    with pytest.raises(ConstraintViolation) as refused:
        compozy_store.tasks.upsert_states([parent, ok_child, orphan])
    assert orphan.task_exec_id in str(refused.value)
    assert str(orphan.parent_state_id) in str(refused.value)
    assert _stored(compozy_store, wf) == []


def test_a_missing_workflow_is_named(compozy_store: Store) -> None:
    wf = workflow(compozy_store)
    lost = _state(replace(wf, workflow_exec_id=new_id()), "lost")
    with pytest.raises(ConstraintViolation, match=lost.workflow_exec_id):
        compozy_store.tasks.upsert_states([_state(wf, "fine"), lost])
    assert _stored(compozy_store, wf) == []


def test_an_invalid_state_is_refused_before_anything_is_sent(compozy_store: Store) -> None:
    wf = workflow(compozy_store)
    bad = _state(wf, "bad")
    bad.task_id = ""
    with pytest.raises(ValidationError, match="task_id"):
        compozy_store.tasks.upsert_states([_state(wf, "fine"), bad])
    assert _stored(compozy_store, wf) == []


def test_inside_a_transaction_a_refused_batch_leaves_the_transaction_usable(
    compozy_store: Store,
) -> None:
    wf = workflow(compozy_store)
    orphan = _state(wf, "orphan")
    orphan.parent_state_id = new_id()
    kept = _state(wf, "kept")
    with compozy_store.transaction() as tx:
        with pytest.raises(ConstraintViolation):
            tx.tasks.upsert_states([_state(wf, "undone"), orphan])
        tx.tasks.upsert_states([kept])
    assert [s.task_id for s in _stored(compozy_store, wf)] == ["kept"]

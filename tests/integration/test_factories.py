"""The testkit's factories: they persist through the store under test, on every backend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import cast

import pytest

from compozy.auth import APIKey, AuthRepository, Role
from compozy.auth.keys import fingerprint, verify_api_key
from compozy.config import DatabaseConfig
from compozy.core import Component, ExecutionType, Status
from compozy.store import Store, open_store
from compozy.task import TaskRepository, TaskState
from compozy.workflow import WorkflowRepository, WorkflowState
from compozy_testkit import fixtures
from compozy_testkit.factories import (
    APIKeyFactory,
    FactorySet,
    TaskStateFactory,
    UserFactory,
    WorkflowStateFactory,
    bind,
    build_task_tree,
)


def depths_of(tasks: list[TaskState]) -> dict[str, int]:
    """task_exec_id -> depth below the first task (the root), from the parent links."""
    depth = {tasks[0].task_exec_id: 0}
    for task in tasks[1:]:
        assert task.parent_state_id is not None
        depth[task.task_exec_id] = depth[task.parent_state_id] + 1
    return depth


# --- workflows -------------------------------------------------------------------------------


def test_workflow_factory_creates_through_the_store(
    workflow_factory: type[WorkflowStateFactory], workflow_repo: WorkflowRepository
) -> None:
    workflow = workflow_factory.create()

    assert workflow.created_at is not None
    assert workflow.status is Status.RUNNING
    assert isinstance(workflow.input, dict)
    assert workflow.input
    assert workflow_repo.get_state(workflow.workflow_exec_id) == workflow


def test_calling_a_factory_is_create(
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
    workflow_repo: WorkflowRepository,
) -> None:
    # factory-boy's shorthand; mypy types the call as the factory, so typed code uses create().
    workflow = cast(WorkflowState, workflow_factory())
    task = cast(TaskState, task_factory(workflow=workflow))

    assert workflow_repo.get_state(workflow.workflow_exec_id).tasks == {task.task_id: task}


def test_workflow_factory_takes_overrides(
    workflow_factory: type[WorkflowStateFactory], workflow_repo: WorkflowRepository
) -> None:
    workflow = workflow_factory.create(
        workflow_id="billing", status=Status.PAUSED, input={"a": [1, 2]}
    )

    stored = workflow_repo.get_state_by_id("billing")
    assert stored.workflow_exec_id == workflow.workflow_exec_id
    assert stored.status is Status.PAUSED
    assert stored.input == {"a": [1, 2]}


def test_workflow_inputs_are_not_shared(workflow_factory: type[WorkflowStateFactory]) -> None:
    first, second = workflow_factory.build_batch(2)

    assert first.input is not second.input


def test_sequences_give_unique_workflow_ids(
    workflow_factory: type[WorkflowStateFactory], workflow_repo: WorkflowRepository
) -> None:
    created = workflow_factory.create_batch(5)

    stored = workflow_repo.list_states()
    assert len(stored) == 5
    assert len({w.workflow_id for w in stored}) == 5
    assert {w.workflow_exec_id for w in stored} == {w.workflow_exec_id for w in created}


# --- tasks -----------------------------------------------------------------------------------


def test_task_factory_creates_a_workflow_for_a_root_task(
    task_factory: type[TaskStateFactory],
    task_repo: TaskRepository,
    workflow_repo: WorkflowRepository,
) -> None:
    task = task_factory.create()

    workflow = workflow_repo.get_state(task.workflow_exec_id)
    assert workflow.workflow_id == task.workflow_id
    assert workflow.tasks == {task.task_id: task}
    assert task_repo.get_state(task.task_exec_id) == task
    assert task.parent_state_id is None
    assert task.component is Component.TASK
    assert task.status is Status.RUNNING
    assert task.execution_type is ExecutionType.BASIC


def test_task_factory_uses_the_given_workflow(
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
    workflow_repo: WorkflowRepository,
) -> None:
    workflow = workflow_factory.create()

    tasks = task_factory.create_batch(3, workflow=workflow)

    assert all(t.workflow_exec_id == workflow.workflow_exec_id for t in tasks)
    assert all(t.workflow_id == workflow.workflow_id for t in tasks)
    assert len({t.task_id for t in tasks}) == 3
    assert len(workflow_repo.list_states()) == 1
    assert set(workflow_repo.get_state(workflow.workflow_exec_id).tasks) == {
        t.task_id for t in tasks
    }


def test_a_child_task_joins_its_parents_workflow(
    task_factory: type[TaskStateFactory],
    task_repo: TaskRepository,
    workflow_repo: WorkflowRepository,
) -> None:
    parent = task_factory.create()

    child = task_factory.create(parent=parent, status=Status.SUCCESS, output={"ok": True})

    assert child.parent_state_id == parent.task_exec_id
    assert child.workflow_exec_id == parent.workflow_exec_id
    assert task_repo.list_children(parent.task_exec_id) == [child]
    assert task_repo.list_children_outputs(parent.task_exec_id) == {child.task_id: {"ok": True}}
    assert len(workflow_repo.list_states()) == 1  # no workflow made for the child


def test_sub_factory_overrides_reach_the_generated_workflow(
    task_factory: type[TaskStateFactory], workflow_repo: WorkflowRepository
) -> None:
    task = task_factory.create(workflow__status=Status.WAITING, workflow__workflow_id="wf-x")

    workflow = workflow_repo.get_state(task.workflow_exec_id)
    assert workflow.status is Status.WAITING
    assert task.workflow_id == "wf-x"


# --- the tree helper -------------------------------------------------------------------------


def test_tree_has_fan_out_children_per_task_on_every_level(
    task_factory: type[TaskStateFactory],
    task_repo: TaskRepository,
    workflow_repo: WorkflowRepository,
) -> None:
    tasks = task_factory.tree(depth=2, fan_out=3)

    assert len(tasks) == 1 + 3 + 9
    root = tasks[0]
    assert root.parent_state_id is None
    depth = depths_of(tasks)
    assert [depth[t.task_exec_id] for t in tasks] == [0] + [1] * 3 + [2] * 9
    for task in tasks[:4]:
        assert len(task_repo.list_children(task.task_exec_id)) == (
            3 if depth[task.task_exec_id] < 2 else 0
        )
    assert {t.workflow_exec_id for t in tasks} == {root.workflow_exec_id}
    assert len(workflow_repo.list_states()) == 1
    assert len(task_repo.list_tasks_in_workflow(root.workflow_exec_id)) == 13


def test_tree_reads_back_in_depth_order(
    task_factory: type[TaskStateFactory], task_repo: TaskRepository
) -> None:
    tasks = task_factory.tree(depth=2, fan_out=3)
    depth = depths_of(tasks)

    tree = task_repo.get_task_tree(tasks[0].task_exec_id)

    assert len(tree) == 13
    assert {t.task_exec_id for t in tree} == set(depth)
    assert tree[0] == tasks[0]
    tree_depths = [depth[t.task_exec_id] for t in tree]
    assert tree_depths == sorted(tree_depths)


def test_tree_progress_counts_the_roots_children(
    task_factory: type[TaskStateFactory], task_repo: TaskRepository
) -> None:
    tasks = task_factory.tree(depth=2, fan_out=3, status=Status.SUCCESS)

    progress = task_repo.get_progress_info(tasks[0].task_exec_id)

    assert progress.total_children == 3
    assert progress.success_count == 3
    assert progress.running_count == 0
    assert progress.completion_rate == 1.0


def test_tree_of_depth_zero_is_the_root_alone(
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
    task_repo: TaskRepository,
) -> None:
    workflow = workflow_factory.create()

    tasks = task_factory.tree(depth=0, fan_out=5, workflow=workflow)

    assert len(tasks) == 1
    assert tasks[0].workflow_exec_id == workflow.workflow_exec_id
    assert task_repo.list_states() == tasks


def test_tree_in_a_given_workflow_makes_no_other(
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
    workflow_repo: WorkflowRepository,
) -> None:
    workflow = workflow_factory.create()

    tasks = task_factory.tree(depth=1, fan_out=4, workflow=workflow)

    assert len(tasks) == 5
    assert [w.workflow_exec_id for w in workflow_repo.list_states()] == [workflow.workflow_exec_id]
    assert {t.workflow_exec_id for t in tasks} == {workflow.workflow_exec_id}


@pytest.mark.parametrize(
    ("depth", "fan_out", "message"),
    [
        (-1, 2, "depth"),
        (1, 0, "fan_out"),
        (1, -3, "fan_out"),
        (True, 2, "depth"),
        (2.0, 2, "depth"),
    ],
)
def test_tree_refuses_a_bad_shape_before_writing(
    task_factory: type[TaskStateFactory],
    task_repo: TaskRepository,
    workflow_repo: WorkflowRepository,
    depth: int,
    fan_out: int,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        task_factory.tree(depth=depth, fan_out=fan_out)

    assert task_repo.list_states() == []
    assert workflow_repo.list_states() == []


def test_build_task_tree_binds_the_store_itself(
    compozy_store: Store, task_repo: TaskRepository
) -> None:
    tasks = build_task_tree(compozy_store, depth=1, fan_out=2, status=Status.FAILED)

    assert len(tasks) == 3
    assert task_repo.list_tasks_by_status(tasks[0].workflow_exec_id, Status.FAILED) == sorted(
        tasks, key=lambda t: (t.created_at, t.task_exec_id)
    )


# --- users and API keys ----------------------------------------------------------------------


def test_user_factory_creates_users_with_unique_emails(
    user_factory: type[UserFactory], auth_repo: AuthRepository
) -> None:
    users = user_factory.create_batch(4)

    assert len({u.email for u in users}) == 4
    assert all(u.role is Role.USER for u in users)
    assert {u.id for u in auth_repo.list_users()} == {u.id for u in users}
    assert auth_repo.get_user_by_email(users[2].email) == users[2]


def test_api_key_plaintext_verifies_against_the_stored_key(
    api_key_factory: type[APIKeyFactory], auth_repo: AuthRepository
) -> None:
    key, plaintext = api_key_factory.create_with_plaintext()

    stored = auth_repo.get_api_key_by_fingerprint(fingerprint(plaintext))
    assert stored == key
    assert plaintext.startswith(f"cpzy_{key.prefix}_")
    assert verify_api_key(plaintext, stored)
    assert not verify_api_key(plaintext + "x", stored)
    assert auth_repo.get_user_by_id(key.user_id).id == key.user_id  # made by the sub-factory


def test_api_key_factory_gives_keys_to_the_given_user(
    user_factory: type[UserFactory],
    api_key_factory: type[APIKeyFactory],
    auth_repo: AuthRepository,
) -> None:
    owner = user_factory.create(role=Role.ADMIN)

    key = api_key_factory.create(user=owner)

    assert isinstance(key, APIKey)
    assert key.created_at is not None
    assert auth_repo.list_api_keys_by_user_id(owner.id) == [key]
    assert len(auth_repo.list_users()) == 1


# --- build() and binding ---------------------------------------------------------------------


def test_build_persists_nothing(
    compozy_factories: FactorySet,
    workflow_repo: WorkflowRepository,
    task_repo: TaskRepository,
    auth_repo: AuthRepository,
) -> None:
    workflow = compozy_factories.workflows.build()
    task = compozy_factories.tasks.build()
    user = compozy_factories.users.build()
    key, plaintext = compozy_factories.api_keys.build_with_plaintext()

    assert workflow.created_at is None
    assert task.created_at is None
    assert task.workflow_exec_id != workflow.workflow_exec_id  # its own, built, workflow
    assert user.created_at is None
    assert verify_api_key(plaintext, key)
    assert workflow_repo.list_states() == []
    assert task_repo.list_states() == []
    assert auth_repo.list_users() == []


def test_the_fixtures_are_bound_to_the_tests_store(
    compozy_store: Store,
    compozy_factories: FactorySet,
    workflow_factory: type[WorkflowStateFactory],
    task_factory: type[TaskStateFactory],
) -> None:
    assert compozy_factories.store is compozy_store
    assert workflow_factory is compozy_factories.workflows
    assert task_factory is compozy_factories.tasks


@pytest.fixture
def two_stores() -> Iterator[tuple[Store, Store]]:
    """Two separate in-memory stores (this test needs no backend parametrisation)."""
    config = DatabaseConfig(driver="sqlite", path=":memory:")
    with open_store(config) as first, open_store(config) as second:
        yield first, second


def test_bound_factories_write_only_to_their_own_store(two_stores: tuple[Store, Store]) -> None:
    first, second = two_stores
    on_first, on_second = bind(first), bind(second)

    task = on_first.tasks.create()
    key = on_second.api_keys.create()

    assert [w.workflow_exec_id for w in first.workflows.list_states()] == [task.workflow_exec_id]
    assert second.workflows.list_states() == []
    assert second.auth.get_api_key_by_id(key.id) == key
    assert first.auth.list_users() == []


def test_factories_bound_to_a_transaction_roll_back_with_it(
    compozy_store: Store, workflow_repo: WorkflowRepository, task_repo: TaskRepository
) -> None:
    def write_then_fail() -> None:
        with compozy_store.transaction() as scope:
            bind(scope).tasks.tree(depth=1, fan_out=2)
            assert len(scope.tasks.list_states()) == 3
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        write_then_fail()

    assert workflow_repo.list_states() == []
    assert task_repo.list_states() == []


def test_an_unbound_factory_builds_but_refuses_to_create() -> None:
    assert isinstance(WorkflowStateFactory.build(), WorkflowState)

    with pytest.raises(RuntimeError, match="not bound to a store"):
        WorkflowStateFactory.create()


def test_the_factory_fixtures_say_how_to_get_factory_boy(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import factory` fail as if factory-boy were not installed.
    monkeypatch.setitem(sys.modules, "factory", None)
    monkeypatch.delitem(sys.modules, "compozy_testkit.factories")

    with pytest.raises(pytest.fail.Exception, match=r"pip install 'compozy\[testkit\]'"):
        fixtures._bind_factories(cast(Store, object()))

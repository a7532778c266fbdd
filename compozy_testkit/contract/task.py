"""Contract of ``TaskRepository`` (SPEC 3.2) and the task shape rule (SPEC 1.2)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from compozy.core import MAX_TREE_DEPTH, Component, ExecutionType, Status
from compozy.errors import CompozyError, ConstraintViolation, TaskNotFound, ValidationError
from compozy.store import Store, sql_connection
from compozy.store.tables import task_states, workflow_states
from compozy.task import ProgressInfo, TaskFilter, TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.contract._build import at, task, usage, workflow
from compozy_testkit.databases import TestDatabase


def _assert_not_found(method: Callable[..., object], task_exec_id: str, *args: object) -> None:
    """``method(task_exec_id, *args)`` raises TaskNotFound naming the missing task."""
    with pytest.raises(TaskNotFound, match=task_exec_id):
        method(task_exec_id, *args)


class TaskRepositoryContract:
    """Every method of the task repository, on whatever Store ``compozy_store`` gives."""

    # --- upsert_state and the shape rule --------------------------------------------------

    def test_upsert_inserts_and_updates_every_field_but_created_at(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        first = task(compozy_store, wf, task_id="a", created_at=at(1), input={"i": 1})
        assert first.created_at == at(1)
        assert first.updated_at is not None
        changed = TaskState(
            task_exec_id=first.task_exec_id,
            task_id="a2",
            workflow_id="wf2",
            workflow_exec_id=wf.workflow_exec_id,
            component=Component.AGENT,
            status=Status.SUCCESS,
            execution_type=ExecutionType.BASIC,
            agent_id="agent",
            action_id="act",
            usage=usage(),
            input={"i": 2},
            output={"o": 3},
            error={"message": "m"},
            created_at=at(99),
        )
        updated = compozy_store.tasks.upsert_state(changed)
        assert updated.created_at == at(1)
        assert updated.updated_at is not None
        assert updated.updated_at >= first.updated_at
        expected = TaskState(
            **{**vars(changed), "created_at": at(1), "updated_at": updated.updated_at}
        )
        assert updated == expected
        assert compozy_store.tasks.get_state(first.task_exec_id) == updated

    def test_upsert_of_a_task_of_an_unknown_workflow_raises_constraint_violation(
        self, compozy_store: Store
    ) -> None:
        orphan = TaskState(
            task_id="t",
            workflow_id="w",
            workflow_exec_id="no-such-exec",
            component=Component.TASK,
            status=Status.RUNNING,
        )
        with pytest.raises(ConstraintViolation, match="no-such-exec"):
            compozy_store.tasks.upsert_state(orphan)
        assert compozy_store.tasks.list_states() == []

    def test_upsert_of_a_task_with_an_unknown_parent_raises_constraint_violation(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        orphan = TaskState(
            task_id="t",
            workflow_id="wf",
            workflow_exec_id=wf.workflow_exec_id,
            parent_state_id="no-such-parent",
            component=Component.TASK,
            status=Status.RUNNING,
        )
        with pytest.raises(ConstraintViolation, match="no-such-parent"):
            compozy_store.tasks.upsert_state(orphan)

    @pytest.mark.parametrize(
        ("execution_type", "fields"),
        [
            (ExecutionType.BASIC, {"agent_id": "a"}),
            (ExecutionType.BASIC, {"action_id": "x"}),
            (ExecutionType.BASIC, {"agent_id": "a", "action_id": "x", "tool_id": "t"}),
            (ExecutionType.BASIC, {"tool_id": "t", "action_id": "x"}),
            (ExecutionType.ROUTER, {"tool_id": "t"}),
            (ExecutionType.ROUTER, {"agent_id": "a", "action_id": "x"}),
            (ExecutionType.ROUTER, {"agent_id": "a"}),
            (ExecutionType.ROUTER, {"action_id": "x"}),
        ],
    )
    def test_shape_rule_refuses_bad_agent_action_tool_combinations_before_sql(
        self, compozy_store: Store, execution_type: ExecutionType, fields: dict[str, Any]
    ) -> None:
        wf = workflow(compozy_store)
        with pytest.raises(ValidationError, match=execution_type.value):
            task(compozy_store, wf, execution_type=execution_type, **fields)
        assert compozy_store.tasks.list_states() == []

    @pytest.mark.parametrize("fields", [{}, {"agent_id": "a", "action_id": "x"}, {"tool_id": "t"}])
    def test_shape_rule_accepts_each_allowed_basic_shape(
        self, compozy_store: Store, fields: dict[str, Any]
    ) -> None:
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf, **fields)
        assert {k: getattr(stored, k) for k in fields} == fields

    @pytest.mark.parametrize("execution_type", list(ExecutionType))
    def test_all_nine_execution_types_are_accepted(
        self, compozy_store: Store, execution_type: ExecutionType
    ) -> None:
        wf = workflow(compozy_store)
        extra: dict[str, Any] = (
            {}
            if execution_type in (ExecutionType.BASIC, ExecutionType.ROUTER)
            else {"agent_id": "a", "tool_id": "t"}
        )
        stored = task(compozy_store, wf, execution_type=execution_type, **extra)
        assert compozy_store.tasks.get_state(stored.task_exec_id).execution_type is execution_type

    def test_a_task_cannot_be_its_own_parent(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf)
        stored.parent_state_id = stored.task_exec_id
        with pytest.raises(ValidationError, match="own parent"):
            compozy_store.tasks.upsert_state(stored)

    # --- get_state / get_state_for_update / get_usage_summary -----------------------------

    def test_get_state_of_a_missing_task_raises_task_not_found(self, compozy_store: Store) -> None:
        _assert_not_found(compozy_store.tasks.get_state, "missing-task")

    def test_get_state_for_update_outside_a_transaction_is_refused(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf)
        with pytest.raises(CompozyError, match="transaction"):
            compozy_store.tasks.get_state_for_update(stored.task_exec_id)

    def test_get_state_for_update_inside_a_transaction_returns_the_row(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf, input={"n": 1})
        with compozy_store.transaction() as tx:
            locked = tx.tasks.get_state_for_update(stored.task_exec_id)
            assert locked == stored
            joined = compozy_store.tasks.get_state_for_update(stored.task_exec_id)
            assert joined == stored
            _assert_not_found(tx.tasks.get_state_for_update, "absent")

    def test_get_usage_summary_is_none_without_usage_and_the_summary_with_it(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        plain = task(compozy_store, wf, task_id="plain")
        costly = task(compozy_store, wf, task_id="costly", usage=usage(prompt=4))
        assert compozy_store.tasks.get_usage_summary(plain.task_exec_id) is None
        assert compozy_store.tasks.get_usage_summary(costly.task_exec_id) == usage(prompt=4)
        _assert_not_found(compozy_store.tasks.get_usage_summary, "absent")

    # --- lists ----------------------------------------------------------------------------

    def test_list_states_orders_by_created_at_then_task_exec_id_ascending(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        for exec_id, seconds in (("late", 9), ("b", 5), ("B", 5), ("a", 5), ("early", 1)):
            task(compozy_store, wf, task_exec_id=exec_id, created_at=at(seconds))
        assert [t.task_exec_id for t in compozy_store.tasks.list_states()] == [
            "early",
            "B",
            "a",
            "b",
            "late",
        ]

    def test_list_states_filter_fields_are_anded(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        other = workflow(compozy_store, workflow_id="other")
        task(compozy_store, wf, task_exec_id="t1", task_id="x", status=Status.RUNNING)
        task(
            compozy_store, wf, task_exec_id="t2", task_id="x", status=Status.SUCCESS, tool_id="tool"
        )
        task(compozy_store, other, task_exec_id="t3", task_id="x", status=Status.RUNNING)

        def ids(**fields: Any) -> list[str]:
            return [t.task_exec_id for t in compozy_store.tasks.list_states(TaskFilter(**fields))]

        assert ids(task_id="x") == ["t1", "t2", "t3"]
        assert ids(task_id="x", status=Status.RUNNING) == ["t1", "t3"]
        assert ids(workflow_exec_id=wf.workflow_exec_id, status=Status.RUNNING) == ["t1"]
        assert ids(tool_id="tool", component=Component.TASK) == ["t2"]
        assert ids(workflow_id="other", status=Status.SUCCESS) == []

    def test_list_states_honours_every_filter_field_on_its_own(self, compozy_store: Store) -> None:
        # Rows that differ in every filterable field, so that a field filtered on alone selects
        # a proper, non-empty subset: an implementation ignoring any one field returns more.
        wf = workflow(compozy_store)
        other = workflow(compozy_store, workflow_id="other")
        seconds = itertools.count()

        def add(owner: WorkflowState, exec_id: str, task_id: str, **fields: Any) -> TaskState:
            """A task created one second after the one before it: list order is this order."""
            created_at = at(next(seconds))
            return task(
                compozy_store, owner, task_id, task_exec_id=exec_id, created_at=created_at, **fields
            )

        root = add(wf, "root", "root")
        agent: dict[str, Any] = {"component": Component.AGENT, "agent_id": "bot"}
        add(wf, "say", "ask", parent=root, status=Status.SUCCESS, action_id="say", **agent)
        add(wf, "think", "ask", parent=root, action_id="think", **agent)
        add(wf, "peer", "ask-peer", component=Component.AGENT, agent_id="peer", action_id="say")
        add(wf, "grep", "grep", parent=root, component=Component.TOOL, tool_id="grep")
        add(other, "route", "route", status=Status.SUCCESS, execution_type=ExecutionType.ROUTER)
        fan = {"component": Component.WORKFLOW, "execution_type": ExecutionType.PARALLEL}
        add(other, "fan", "fan", agent_id="bot", tool_id="grep", **fan)

        def ids(**fields: Any) -> list[str]:
            return [t.task_exec_id for t in compozy_store.tasks.list_states(TaskFilter(**fields))]

        everything = ["root", "say", "think", "peer", "grep", "route", "fan"]
        assert ids() == everything
        cases: list[tuple[str, Any, list[str]]] = [
            ("task_id", "ask", ["say", "think"]),
            ("task_exec_id", "think", ["think"]),
            ("workflow_id", "other", ["route", "fan"]),
            ("workflow_exec_id", wf.workflow_exec_id, ["root", "say", "think", "peer", "grep"]),
            ("parent_state_id", "root", ["say", "think", "grep"]),
            ("component", Component.AGENT, ["say", "think", "peer"]),
            ("component", Component.TASK, ["root", "route"]),
            ("status", Status.SUCCESS, ["say", "route"]),
            ("execution_type", ExecutionType.ROUTER, ["route"]),
            ("execution_type", ExecutionType.PARALLEL, ["fan"]),
            ("agent_id", "bot", ["say", "think", "fan"]),
            ("action_id", "say", ["say", "peer"]),
            ("tool_id", "grep", ["grep", "fan"]),
        ]
        wrong = {
            f"{name}={value}": found
            for name, value, expected in cases
            if (found := ids(**{name: value})) != expected
        }
        assert wrong == {}, "these filter fields selected the wrong rows"
        absent = {
            name: ids(**{name: "absent"})
            for name in ("task_id", "task_exec_id", "parent_state_id", "agent_id", "action_id")
        }
        assert {name: found for name, found in absent.items() if found} == {}
        think = compozy_store.tasks.get_state("think")
        every_field = {name: getattr(think, name) for name in vars(TaskFilter())}
        assert ids(**every_field) == ["think"]

    def test_list_by_ids_returns_empty_for_no_ids(self, compozy_store: Store) -> None:
        assert compozy_store.tasks.list_by_ids([]) == []

    def test_list_by_ids_accepts_tens_of_thousands_of_ids_and_keeps_task_order(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        stored = [
            task(compozy_store, wf, task_exec_id=f"t{i:02d}", created_at=at(50 - i))
            for i in range(30)
        ]
        wanted = [f"missing-{i}" for i in range(25_000)] + [t.task_exec_id for t in stored[::2]]
        wanted.append(stored[0].task_exec_id)  # a duplicate is returned once
        found = compozy_store.tasks.list_by_ids(wanted)
        assert [t.task_exec_id for t in found] == [t.task_exec_id for t in stored[::2]][::-1]

    def test_list_tasks_in_workflow_maps_task_id_to_its_latest_row(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        other = workflow(compozy_store)
        task(compozy_store, wf, task_id="a", task_exec_id="a1", created_at=at(1))
        task(compozy_store, wf, task_id="a", task_exec_id="a2", created_at=at(2))
        task(compozy_store, wf, task_id="b", task_exec_id="bz", created_at=at(1))
        task(compozy_store, wf, task_id="b", task_exec_id="bZ", created_at=at(1))
        task(compozy_store, other, task_id="a", task_exec_id="elsewhere", created_at=at(5))
        latest = compozy_store.tasks.list_tasks_in_workflow(wf.workflow_exec_id)
        assert {k: v.task_exec_id for k, v in latest.items()} == {"a": "a2", "b": "bz"}
        assert compozy_store.tasks.list_tasks_in_workflow("no-such-exec") == {}

    def test_list_tasks_by_status_agent_and_tool(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        other = workflow(compozy_store)
        task(compozy_store, wf, task_exec_id="s1", status=Status.SUCCESS, created_at=at(2))
        task(compozy_store, wf, task_exec_id="s0", status=Status.SUCCESS, created_at=at(1))
        task(compozy_store, wf, task_exec_id="ag", agent_id="bot", action_id="say")
        task(compozy_store, wf, task_exec_id="tl", tool_id="grep")
        task(compozy_store, other, task_exec_id="x", status=Status.SUCCESS, tool_id="grep")
        task(compozy_store, other, task_exec_id="y", agent_id="bot", action_id="say")
        repo, exec_id = compozy_store.tasks, wf.workflow_exec_id
        assert [t.task_exec_id for t in repo.list_tasks_by_status(exec_id, Status.SUCCESS)] == [
            "s0",
            "s1",
        ]
        assert [t.task_exec_id for t in repo.list_tasks_by_agent(exec_id, "bot")] == ["ag"]
        assert [t.task_exec_id for t in repo.list_tasks_by_tool(exec_id, "grep")] == ["tl"]
        assert repo.list_tasks_by_status(exec_id, Status.CANCELED) == []

    def test_list_children_returns_direct_children_in_task_order(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root", created_at=at(0))
        kids = [
            task(compozy_store, wf, task_id=f"k{i}", parent=root, created_at=at(10 - i))
            for i in range(3)
        ]
        task(compozy_store, wf, task_id="grandchild", parent=kids[0], created_at=at(20))
        assert [t.task_id for t in compozy_store.tasks.list_children(root.task_exec_id)] == [
            "k2",
            "k1",
            "k0",
        ]
        assert compozy_store.tasks.list_children("nobody") == []

    def test_list_children_outputs_maps_task_id_to_latest_non_null_output(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root")
        task(compozy_store, wf, task_id="a", parent=root, output={"v": 1}, created_at=at(1))
        task(compozy_store, wf, task_id="a", parent=root, output={"v": 2}, created_at=at(2))
        task(compozy_store, wf, task_id="a", parent=root, output=None, created_at=at(3))
        task(compozy_store, wf, task_id="silent", parent=root, output=None)
        cousin = task(compozy_store, wf, task_id="cousin")
        task(compozy_store, wf, task_id="a", parent=cousin, output={"v": 9}, created_at=at(9))
        assert compozy_store.tasks.list_children_outputs(root.task_exec_id) == {"a": {"v": 2}}

    def test_get_child_by_task_id_returns_the_latest_child(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root")
        task(compozy_store, wf, task_id="c", task_exec_id="c-1", parent=root, created_at=at(1))
        task(compozy_store, wf, task_id="c", task_exec_id="c-2", parent=root, created_at=at(2))
        cousin = task(compozy_store, wf, task_id="cousin")
        task(compozy_store, wf, task_id="c", task_exec_id="c-9", parent=cousin, created_at=at(9))
        assert compozy_store.tasks.get_child_by_task_id(root.task_exec_id, "c").task_exec_id == (
            "c-2"
        )
        with pytest.raises(TaskNotFound, match="nope"):
            compozy_store.tasks.get_child_by_task_id(root.task_exec_id, "nope")

    def test_children_tie_on_created_at_is_broken_by_the_greatest_task_exec_id(
        self, compozy_store: Store
    ) -> None:
        # "Latest" is created_at, then task_exec_id by code point ("B" < "a" < "b"), for
        # get_child_by_task_id and list_children_outputs alike.
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root", created_at=at(0))
        for exec_id in ("c-B", "c-b", "c-a"):
            task(
                compozy_store, wf, task_exec_id=exec_id, task_id="c", parent=root, created_at=at(1)
            )
        task(compozy_store, wf, task_exec_id="c-c", task_id="c", parent=root, created_at=at(0.5))
        for exec_id in ("o-B", "o-b", "o-a"):
            task(
                compozy_store,
                wf,
                task_exec_id=exec_id,
                task_id="o",
                parent=root,
                output={"from": exec_id},
                created_at=at(1),
            )
        # The greatest id of the tie has no output: the latest non-null one is still "o-b".
        task(compozy_store, wf, task_exec_id="o-c", task_id="o", parent=root, created_at=at(1))
        repo = compozy_store.tasks
        assert repo.get_child_by_task_id(root.task_exec_id, "c").task_exec_id == "c-b"
        assert repo.list_children_outputs(root.task_exec_id) == {"o": {"from": "o-b"}}

    # --- trees and progress ---------------------------------------------------------------

    def test_get_task_tree_orders_by_depth_then_created_at_then_id(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root", created_at=at(0))
        b = task(compozy_store, wf, task_id="b", parent=root, created_at=at(5))
        a = task(compozy_store, wf, task_id="a", parent=root, created_at=at(3))
        task(compozy_store, wf, task_id="a1", parent=a, created_at=at(9))
        task(compozy_store, wf, task_id="b1", parent=b, created_at=at(4))
        task(compozy_store, wf, task_id="outside", created_at=at(1))
        tree = compozy_store.tasks.get_task_tree(root.task_exec_id)
        assert [t.task_id for t in tree] == ["root", "a", "b", "b1", "a1"]

    def test_get_task_tree_breaks_ties_on_task_exec_id_by_code_point(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_exec_id="root", task_id="root", created_at=at(0))
        kids = {
            exec_id: task(
                compozy_store, wf, task_exec_id=exec_id, task_id="k", parent=root, created_at=at(1)
            )
            for exec_id in ("k-b", "k-B", "k-a")
        }
        # Later, so after the tie whatever its id: created_at comes before the id.
        task(compozy_store, wf, task_exec_id="k-0", task_id="k", parent=root, created_at=at(2))
        for exec_id in ("g-b", "g-a"):
            task(
                compozy_store,
                wf,
                task_exec_id=exec_id,
                task_id="g",
                parent=kids["k-b"],
                created_at=at(1),
            )
        tree = compozy_store.tasks.get_task_tree("root")
        assert [t.task_exec_id for t in tree] == ["root", "k-B", "k-a", "k-b", "k-0", "g-a", "g-b"]

    def test_get_task_tree_stops_at_max_depth(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        node = root = task(compozy_store, wf, task_id="d0")
        for depth in range(1, 6):
            node = task(compozy_store, wf, task_id=f"d{depth}", parent=node)
        repo = compozy_store.tasks
        assert [t.task_id for t in repo.get_task_tree(root.task_exec_id, max_depth=2)] == [
            "d0",
            "d1",
            "d2",
        ]
        assert [t.task_id for t in repo.get_task_tree(root.task_exec_id, max_depth=0)] == ["d0"]
        assert len(repo.get_task_tree(root.task_exec_id)) == 6
        for bad in (-1, True, "2", 1.0):
            with pytest.raises(ValidationError, match="max_depth"):
                repo.get_task_tree(root.task_exec_id, max_depth=bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [2**31, 2**63, MAX_TREE_DEPTH + 1, -1, 10**100])
    def test_get_task_tree_takes_max_depth_from_0_to_the_bound_only(
        self, compozy_store: Store, bad: int
    ) -> None:
        # PostgreSQL's integer ends at 2**31 - 1 and SQLite's at 2**63 - 1: past a bound far
        # below both, every backend gives the same ValidationError instead of [] or a crash.
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="d0")
        child = task(compozy_store, wf, task_id="d1", parent=root)
        with pytest.raises(ValidationError, match=f"max_depth is {bad}; .* 0 to {MAX_TREE_DEPTH}"):
            compozy_store.tasks.get_task_tree(root.task_exec_id, max_depth=bad)
        deepest = compozy_store.tasks.get_task_tree(root.task_exec_id, max_depth=MAX_TREE_DEPTH)
        assert [t.task_exec_id for t in deepest] == [root.task_exec_id, child.task_exec_id]

    def test_get_task_tree_goes_100_levels_deep_by_default(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        node = root = task(compozy_store, wf, task_id="d0")
        for depth in range(1, 102):
            node = task(compozy_store, wf, task_id=f"d{depth}", parent=node)
        tree = compozy_store.tasks.get_task_tree(root.task_exec_id)
        assert [t.task_id for t in tree] == [f"d{depth}" for depth in range(101)]

    def test_get_task_tree_reports_each_task_once_when_parent_links_form_a_cycle(
        self, compozy_store: Store
    ) -> None:
        # Parent links are not checked for cycles on update: a -> b -> c -> a is storable, and
        # the tree of a must still list each task once, at its smallest depth.
        wf = workflow(compozy_store)
        a = task(compozy_store, wf, task_exec_id="a", task_id="a", created_at=at(0))
        b = task(compozy_store, wf, task_exec_id="b", task_id="b", parent=a, created_at=at(1))
        c = task(compozy_store, wf, task_exec_id="c", task_id="c", parent=b, created_at=at(2))
        a.parent_state_id = c.task_exec_id
        compozy_store.tasks.upsert_state(a)
        tree = compozy_store.tasks.get_task_tree("a", max_depth=10)
        assert [(t.task_exec_id, t.parent_state_id) for t in tree] == [
            ("a", "c"),
            ("b", "a"),
            ("c", "b"),
        ]

    def test_get_task_tree_of_an_unknown_root_is_empty(self, compozy_store: Store) -> None:
        assert compozy_store.tasks.get_task_tree("no-root") == []

    def test_get_progress_info_counts_direct_children(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root")
        statuses = [
            Status.SUCCESS,
            Status.SUCCESS,
            Status.FAILED,
            Status.TIMED_OUT,
            Status.CANCELED,
            Status.PENDING,
            Status.RUNNING,
            Status.WAITING,
            Status.PAUSED,
            Status.SUCCESS,
        ]
        for i, status in enumerate(statuses):
            child = task(compozy_store, wf, task_id=f"c{i}", parent=root, status=status)
        task(compozy_store, wf, task_id="grandchild", parent=child, status=Status.FAILED)
        info = compozy_store.tasks.get_progress_info(root.task_exec_id)
        assert (info.total_children, info.success_count, info.failed_count) == (10, 3, 1)
        assert (info.canceled_count, info.timed_out_count, info.pending_count) == (1, 1, 1)
        assert (info.running_count, info.terminal_count) == (3, 6)
        assert info.status_counts[Status.SUCCESS] == 3
        assert sum(info.status_counts.values()) == 10
        assert info.completion_rate == pytest.approx(0.3)
        assert info.failure_rate == pytest.approx(0.2)

    def test_get_progress_info_without_children_is_all_zero(self, compozy_store: Store) -> None:
        info = compozy_store.tasks.get_progress_info("lonely")
        assert (info.total_children, info.completion_rate, info.failure_rate) == (0, 0.0, 0.0)
        assert info.status_counts == {}
        assert info == ProgressInfo()

    # --- merge_usage ----------------------------------------------------------------------

    def test_merge_usage_merges_into_the_task(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf)
        assert compozy_store.tasks.merge_usage(stored.task_exec_id, None) is None
        compozy_store.tasks.merge_usage(stored.task_exec_id, usage(prompt=1, completion=1))
        merged = compozy_store.tasks.merge_usage(stored.task_exec_id, usage(prompt=2, completion=3))
        assert merged == usage(prompt=3, completion=4)
        assert compozy_store.tasks.get_usage_summary(stored.task_exec_id) == merged
        _assert_not_found(compozy_store.tasks.merge_usage, "absent", usage())

    # --- rules the schema itself enforces -------------------------------------------------

    def test_deleting_a_workflow_removes_its_tasks_and_a_task_its_descendants(
        self, compozy_database: TestDatabase
    ) -> None:
        # Deletes with SQL (the protocol has no delete): a check of compozy's own schema.
        compozy_store = compozy_database.store()
        wf = workflow(compozy_store)
        other = workflow(compozy_store)
        root = task(compozy_store, wf, task_id="root")
        child = task(compozy_store, wf, task_id="child", parent=root)
        task(compozy_store, wf, task_id="grandchild", parent=child)
        sibling = task(compozy_store, wf, task_id="sibling")
        kept = task(compozy_store, other, task_id="elsewhere")
        with sql_connection(compozy_store, write=True) as conn:
            conn.execute(
                sa.delete(task_states).where(task_states.c.task_exec_id == root.task_exec_id)
            )
        assert {t.task_id for t in compozy_store.tasks.list_states()} == {"sibling", "elsewhere"}
        with sql_connection(compozy_store, write=True) as conn:
            conn.execute(
                sa.delete(workflow_states).where(
                    workflow_states.c.workflow_exec_id == wf.workflow_exec_id
                )
            )
        assert compozy_store.tasks.list_states() == [kept]
        with pytest.raises(TaskNotFound):
            compozy_store.tasks.get_state(sibling.task_exec_id)

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("execution_type", "router"),
            ("status", "DONE"),
            ("component", "robot"),
            ("input", "[1, 2]"),
        ],
    )
    def test_the_database_checks_refuse_what_validation_would_have_refused(
        self, compozy_database: TestDatabase, column: str, value: str
    ) -> None:
        # Writes with SQL behind the repository: a check of compozy's own schema.
        compozy_store = compozy_database.store()
        wf = workflow(compozy_store)
        stored = task(compozy_store, wf, tool_id="grep")  # a basic tool call: fine
        statement = sa.text(f"UPDATE task_states SET {column} = :value WHERE task_exec_id = :id")
        with pytest.raises(ConstraintViolation), sql_connection(compozy_store, write=True) as conn:
            conn.execute(statement, {"value": value, "id": stored.task_exec_id})
        assert compozy_store.tasks.get_state(stored.task_exec_id) == stored

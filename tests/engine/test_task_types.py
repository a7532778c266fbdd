"""End-to-end executions of every task type on every backend, through the real Store."""

from __future__ import annotations

import pytest

from compozy.core import Component, ExecutionType, Status
from compozy.store import Store
from compozy.task import TaskState

from .conftest import Define, MakeEngine

# --- basic --------------------------------------------------------------------------------------


def test_basic_task_calls_its_tool_and_goes_pending_running_success(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: hello
            tasks:
              - id: greet
                tool: format
                with: {template: "Hello, {{ input.name }}!"}
            """
        )
    )
    seen: list[tuple[str, Status]] = []

    final = engine.run(
        "hello", {"name": "Ann"}, on_task=lambda t: seen.append((t.task_id, t.status))
    )

    assert final.status is Status.SUCCESS
    assert seen == [("greet", Status.PENDING), ("greet", Status.RUNNING), ("greet", Status.SUCCESS)]
    greet = final.tasks["greet"]
    assert greet.output == {"text": "Hello, Ann!"}
    assert greet.input == {"template": "Hello, Ann!"}
    assert greet.component is Component.TOOL
    assert greet.tool_id == "format"
    assert greet.execution_type is ExecutionType.BASIC
    assert greet.parent_state_id is None
    assert greet.error is None
    stored = compozy_store.workflows.get_state(final.workflow_exec_id)
    assert stored.status is Status.SUCCESS
    assert stored.input == {"name": "Ann"}


def test_user_tool_gets_native_values_from_templates(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: add
            tasks:
              - {id: sum, tool: "TOOLS:add", with: {a: "{{ input.a }}", b: "{{ input.b * 2 }}"}}
              - {id: again, tool: "TOOLS:add", with: {a: "{{ tasks.sum.output.sum }}", b: 1}}
            """
        )
    )

    final = engine.run("add", {"a": 1, "b": 20})

    assert final.tasks["sum"].output == {"sum": 41}
    assert final.tasks["again"].output == {"sum": 42}


# --- containers ---------------------------------------------------------------------------------


def test_composite_runs_children_in_order_and_outputs_the_last(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: comp
            tasks:
              - id: steps
                type: composite
                tasks:
                  - {id: first, tool: echo, with: {n: 1}}
                  - {id: second, tool: echo, with: {n: "{{ tasks.first.output.n + 1 }}"}}
                  - {id: third, tool: echo, with: {n: "{{ tasks.second.output.n + 1 }}"}}
            """
        )
    )

    final = engine.run("comp")

    steps = final.tasks["steps"]
    assert steps.status is Status.SUCCESS
    assert steps.execution_type is ExecutionType.COMPOSITE
    assert steps.component is Component.TASK
    assert steps.output == {"n": 3}
    children = compozy_store.tasks.list_children(steps.task_exec_id)
    assert [c.task_id for c in children] == ["first", "second", "third"]
    assert [c.output for c in children] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_parallel_results_follow_definition_order(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: par
            tasks:
              - id: fan
                type: parallel
                tasks:
                  - {id: slow, tool: sleep, with: {seconds: 0.2}}
                  - {id: fast, tool: echo, with: {who: fast}}
                  - {id: fast2, tool: echo, with: {who: fast2}}
            """
        )
    )

    final = engine.run("par")

    fan = final.tasks["fan"]
    assert fan.status is Status.SUCCESS
    assert fan.execution_type is ExecutionType.PARALLEL
    assert fan.output == {"results": [{"slept": 0.2}, {"who": "fast"}, {"who": "fast2"}]}
    progress = compozy_store.tasks.get_progress_info(fan.task_exec_id)
    assert progress.total_children == 3
    assert progress.success_count == 3


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_collection_runs_one_child_per_item_with_item_and_index(
    define: Define, make_engine: MakeEngine, compozy_store: Store, mode: str
) -> None:
    engine = make_engine(
        define(
            f"""
            id: coll
            tasks:
              - id: each
                type: collection
                mode: {mode}
                items: "{{{{ input.names }}}}"
                task:
                  id: hello_one
                  tool: format
                  with: {{template: "{{{{ index }}}}:{{{{ item }}}}"}}
            """
        )
    )

    final = engine.run("coll", {"names": ["ann", "bob", "cy"]})

    each = final.tasks["each"]
    assert each.status is Status.SUCCESS
    assert each.execution_type is ExecutionType.COLLECTION
    assert each.output == {"results": [{"text": "0:ann"}, {"text": "1:bob"}, {"text": "2:cy"}]}
    children = compozy_store.tasks.list_children(each.task_exec_id)
    assert sorted(c.output["text"] for c in children if c.output) == ["0:ann", "1:bob", "2:cy"]
    assert {c.task_id for c in children} == {"hello_one"}


def test_collection_of_an_empty_list_succeeds_with_no_results(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: coll
            tasks:
              - id: each
                type: collection
                items: "{{ input.names }}"
                task: {id: one, tool: echo}
            """
        )
    )

    final = engine.run("coll", {"names": []})

    assert final.status is Status.SUCCESS
    assert final.tasks["each"].output == {"results": []}
    assert compozy_store.tasks.list_children(final.tasks["each"].task_exec_id) == []


def test_collection_items_that_are_not_a_list_fail_the_task(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: coll
            tasks:
              - id: each
                type: collection
                items: "{{ input.names }}"
                task: {id: one, tool: echo}
            """
        )
    )

    final = engine.run("coll", {"names": "not a list"})

    each = final.tasks["each"]
    assert each.status is Status.FAILED
    assert each.error is not None
    assert each.error["code"] == "TEMPLATE_FAILED"
    assert "rendered to a str, not a list" in each.error["message"]


@pytest.mark.parametrize(("n", "route", "size"), [(50, "big", "big"), (2, "small", "small")])
def test_router_runs_only_the_chosen_route(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    n: int,
    route: str,
    size: str,
) -> None:
    engine = make_engine(
        define(
            """
            id: route
            tasks:
              - id: pick
                type: router
                condition: "{{ 'big' if input.n > 10 else 'small' }}"
                routes:
                  big: {id: big_path, tool: echo, with: {size: big}}
                  small: {id: small_path, tool: echo, with: {size: small}}
            """
        )
    )

    final = engine.run("route", {"n": n})

    pick = final.tasks["pick"]
    assert pick.status is Status.SUCCESS
    assert pick.execution_type is ExecutionType.ROUTER
    assert pick.output == {"route": route, "output": {"size": size}}
    children = compozy_store.tasks.list_children(pick.task_exec_id)
    assert [c.task_id for c in children] == [f"{route}_path"]


def test_router_boolean_condition_matches_yaml_true_and_false_keys(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: route
            tasks:
              - id: pick
                type: router
                condition: "{{ input.flag }}"
                routes:
                  true: {id: yes_path, tool: echo, with: {v: "yes"}}
                  false: {id: no_path, tool: echo, with: {v: "no"}}
            """
        )
    )

    assert engine.run("route", {"flag": True}).tasks["pick"].output == {
        "route": "true",
        "output": {"v": "yes"},
    }
    assert engine.run("route", {"flag": False}).tasks["pick"].output["route"] == "false"  # type: ignore[index]


def test_router_without_a_matching_route_fails_with_no_route(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: route
            tasks:
              - id: pick
                type: router
                condition: "{{ input.size }}"
                routes: {big: {id: big_path, tool: echo}}
            """
        )
    )

    final = engine.run("route", {"size": "medium"})

    assert final.status is Status.FAILED
    error = final.tasks["pick"].error
    assert error is not None
    assert error["code"] == "NO_ROUTE"
    assert "'medium'" in error["message"]


THREE_LEVELS = """
id: deep
tasks:
  - id: outer
    type: composite
    tasks:
      - id: prepare
        tool: echo
        with: {names: "{{ input.names }}"}
      - id: fan
        type: parallel
        tasks:
          - id: each
            type: collection
            items: "{{ tasks.prepare.output.names }}"
            task: {id: greet_one, tool: format, with: {template: "hi {{ item }}"}}
          - {id: side, tool: echo, with: {x: 1}}
"""


def test_three_level_tree_is_stored_under_its_parents(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(define(THREE_LEVELS))

    final = engine.run("deep", {"names": ["a", "b"]})

    assert final.status is Status.SUCCESS
    outer = final.tasks["outer"]
    tree = compozy_store.tasks.get_task_tree(outer.task_exec_id)
    by_exec = {t.task_exec_id: t for t in tree}
    assert len(tree) == 1 + 2 + 2 + 2  # outer; prepare, fan; each, side; two greet_one
    assert all(t.status is Status.SUCCESS for t in tree)

    def parent_of(task: TaskState) -> str | None:
        if task.parent_state_id is None:
            return None
        return by_exec[task.parent_state_id].task_id

    assert {t.task_id: parent_of(t) for t in tree} == {
        "outer": None,
        "prepare": "outer",
        "fan": "outer",
        "each": "fan",
        "side": "fan",
        "greet_one": "each",
    }
    types = {t.task_id: t.execution_type for t in tree}
    assert types["outer"] is ExecutionType.COMPOSITE
    assert types["fan"] is ExecutionType.PARALLEL
    assert types["each"] is ExecutionType.COLLECTION
    assert outer.output == {
        "results": [{"results": [{"text": "hi a"}, {"text": "hi b"}]}, {"x": 1}]
    }

"""Failures: how a failed task stops or fails what is around it; usage merging."""

from __future__ import annotations

from typing import Any

from compozy.core import Status
from compozy.store import Store

from . import tools_for_tests
from .conftest import Define, MakeEngine, RunYaml, tasks_by_id

# --- failure propagation ------------------------------------------------------------------------


def test_tool_exception_fails_the_task_with_its_message(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define("id: w\ntasks: [{id: boom, tool: fail, with: {message: 'it broke'}}]\n")
    )

    final = engine.run("w")

    assert final.status is Status.FAILED
    assert final.tasks["boom"].error == {"message": "it broke", "code": "TOOL_FAILED"}
    assert final.tasks["boom"].output is None
    assert final.error is not None
    assert final.error["code"] == "TASK_FAILED"
    assert "boom" in final.error["message"]


def test_tool_returning_a_non_dict_fails_the_task(define: Define, make_engine: MakeEngine) -> None:
    engine = make_engine(define("id: w\ntasks: [{id: bad, tool: 'TOOLS:returns_a_list'}]\n"))

    error = engine.run("w").tasks["bad"].error

    assert error is not None
    assert error["code"] == "TOOL_FAILED"
    assert "returned a list" in error["message"]


def test_undefined_template_name_fails_with_template_failed(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define("id: w\ntasks: [{id: t, tool: echo, with: {a: '{{ input.nme }}'}}]\n")
    )

    task = engine.run("w", {"name": "x"}).tasks["t"]

    assert task.status is Status.FAILED
    assert task.error is not None
    assert task.error["code"] == "TEMPLATE_FAILED"
    assert "'nme'" in task.error["message"]


def test_top_level_failure_stops_later_tasks(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: w
            tasks:
              - {id: ok, tool: echo}
              - {id: boom, tool: fail}
              - {id: never, tool: echo}
            """
        )
    )

    final = engine.run("w")

    assert final.status is Status.FAILED
    assert set(tasks_by_id(compozy_store, final.workflow_exec_id)) == {"ok", "boom"}
    assert final.tasks["ok"].status is Status.SUCCESS


def test_failure_inside_composite_stops_its_later_children_and_fails_it(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: w
            tasks:
              - id: steps
                type: composite
                tasks:
                  - {id: ok, tool: echo}
                  - {id: boom, tool: fail, with: {message: nope}}
                  - {id: never, tool: echo}
              - {id: after, tool: echo}
            """
        )
    )

    final = engine.run("w")

    grouped = tasks_by_id(compozy_store, final.workflow_exec_id)
    assert set(grouped) == {"steps", "ok", "boom"}
    steps = final.tasks["steps"]
    assert steps.status is Status.FAILED
    assert steps.error is not None
    assert steps.error["code"] == "CHILD_FAILED"
    assert "'boom'" in steps.error["message"]
    assert "nope" in steps.error["message"]
    assert final.status is Status.FAILED


def test_parallel_wait_all_runs_every_child_despite_a_failure(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: w
            tasks:
              - id: fan
                type: parallel
                strategy: wait_all
                tasks:
                  - {id: boom, tool: fail}
                  - {id: slow, tool: sleep, with: {seconds: 0.1}}
                  - {id: quick, tool: echo}
            """
        )
    )

    final = engine.run("w")

    assert final.status is Status.FAILED
    assert final.tasks["fan"].status is Status.FAILED
    assert final.tasks["fan"].error["code"] == "CHILD_FAILED"  # type: ignore[index]
    assert final.tasks["boom"].status is Status.FAILED
    assert final.tasks["slow"].status is Status.SUCCESS
    assert final.tasks["quick"].status is Status.SUCCESS


def test_parallel_fail_fast_cancels_running_siblings_and_does_not_start_queued_ones(
    run_yaml: RunYaml, gate_name: str
) -> None:
    # Two workers: `held` (kept RUNNING by a gate nobody opens) and `boom` start; `later1` and
    # `later2` are queued. When boom fails, held is canceled where it runs and the queued ones
    # end CANCELED without running.
    final = run_yaml(
        """
        id: w
        tasks:
          - id: fan
            type: parallel
            strategy: fail_fast
            tasks:
              - {id: held, tool: "TOOLS:gate", with: {name: "{{ input.gate }}"}}
              - {id: boom, tool: fail}
              - {id: later1, tool: echo}
              - {id: later2, tool: echo}
        """,
        {"gate": gate_name},
        within=tools_for_tests.GATE_TIMEOUT / 3,
        max_parallel_tasks=2,
    )

    assert final.status is Status.FAILED
    assert final.tasks["fan"].status is Status.FAILED
    assert final.tasks["fan"].error["code"] == "CHILD_FAILED"  # type: ignore[index]
    assert "'boom'" in final.tasks["fan"].error["message"]  # type: ignore[index]
    assert final.tasks["boom"].status is Status.FAILED
    held = final.tasks["held"]
    assert (held.status, held.output) == (Status.CANCELED, None)
    assert held.error == {
        "message": "canceled: task 'boom' failed and 'fan' is fail_fast",
        "code": "CANCELED",
    }
    for later in ("later1", "later2"):
        assert final.tasks[later].status is Status.CANCELED
        assert final.tasks[later].output is None
        assert final.tasks[later].error == {
            "message": "not started: task 'boom' failed and 'fan' is fail_fast",
            "code": "CANCELED",
        }


def test_failed_collection_child_fails_the_collection(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: w
            tasks:
              - id: each
                type: collection
                items: [1, 0, 2]
                task: {id: check, tool: "TOOLS:add", with: {a: "{{ 1 / item }}", b: 0}}
            """
        )
    )

    final = engine.run("w")

    each = final.tasks["each"]
    assert each.status is Status.FAILED
    children = compozy_store.tasks.list_children(each.task_exec_id)
    assert sorted(c.status.value for c in children) == ["FAILED", "SUCCESS", "SUCCESS"]


# --- usage --------------------------------------------------------------------------------------


def test_usage_reported_by_tools_is_merged_into_tasks_and_the_workflow(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(
        define(
            """
            id: llm
            tasks:
              - {id: first, tool: "TOOLS:report_usage", with: {tokens: 10}}
              - {id: second, tool: "TOOLS:report_usage", with: {tokens: 5}}
              - {id: other, tool: "TOOLS:report_usage", with: {tokens: 7, model: model-b}}
              - {id: none, tool: echo}
            """
        )
    )

    final = engine.run("llm")

    def totals(usage: Any) -> dict[str, tuple[int, int, int]]:
        return {
            e.model: (e.prompt_tokens, e.completion_tokens, e.total_tokens) for e in usage.entries
        }

    assert totals(final.tasks["first"].usage) == {"model-a": (10, 1, 11)}
    assert totals(compozy_store.tasks.get_usage_summary(final.tasks["second"].task_exec_id)) == {
        "model-a": (5, 1, 6)
    }
    assert final.tasks["none"].usage is None
    assert totals(final.usage) == {"model-a": (15, 2, 17), "model-b": (7, 1, 8)}


def test_usage_from_parallel_children_is_summed_without_losing_any(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: llm
            tasks:
              - id: each
                type: collection
                items: "{{ range(8) }}"
                task: {id: call, tool: "TOOLS:report_usage", with: {tokens: "{{ item + 1 }}"}}
            """
        )
    )

    final = engine.run("llm")

    assert final.usage is not None
    [entry] = final.usage.entries
    assert entry.prompt_tokens == sum(range(1, 9))
    assert entry.completion_tokens == 8


def test_builtin_sleep_refuses_a_negative_delay(define: Define, make_engine: MakeEngine) -> None:
    engine = make_engine(define("id: w\ntasks: [{id: nap, tool: sleep, with: {seconds: -1}}]\n"))

    error = engine.run("w").tasks["nap"].error

    assert error is not None
    assert error["code"] == "TOOL_FAILED"
    assert ">= 0" in error["message"]

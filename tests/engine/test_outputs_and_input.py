"""The workflow output templates, input validation and unknown workflow ids."""

from __future__ import annotations

from typing import Any

import pytest

from compozy.core import Status
from compozy.engine import UnknownWorkflow
from compozy.errors import ValidationError
from compozy.store import Store

from .conftest import Define, MakeEngine, RunYaml

# --- outputs ------------------------------------------------------------------------------------


def test_outputs_templates_build_the_workflow_output(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: out
            tasks:
              - {id: greet, tool: format, with: {template: "Hello, {{ input.name }}!"}}
              - id: each
                type: collection
                items: [1, 2]
                task: {id: double, tool: "TOOLS:add", with: {a: "{{ item }}", b: "{{ item }}"}}
            outputs:
              greeting: "{{ tasks.greet.output.text }}"
              sums: "{{ tasks.each.output.results | map(attribute='sum') | list }}"
              fixed: {nested: ["{{ input.name | upper }}", 1]}
            """
        )
    )

    final = engine.run("out", {"name": "Ann"})

    assert final.status is Status.SUCCESS
    assert final.output == {
        "greeting": "Hello, Ann!",
        "sums": [2, 4],
        "fixed": {"nested": ["ANN", 1]},
    }


def test_without_outputs_the_default_output_is_each_top_level_task_output(
    run_yaml: RunYaml,
) -> None:
    final = run_yaml(
        """
        id: w
        tasks:
          - {id: a, tool: echo, with: {x: 1}}
          - id: each
            type: collection
            items: [1, 2, 3]
            task: {id: one, tool: echo, with: {n: "{{ item }}"}}
          - id: both
            type: parallel
            tasks:
              - {id: left, tool: echo, with: {side: l}}
              - {id: right, tool: echo, with: {side: r}}
        """
    )

    # Every collection child is there, in item order (not only the last), and no row field
    # such as parent_state_id or execution_type is.
    assert final.output == {
        "a": {"x": 1},
        "each": {"results": [{"n": 1}, {"n": 2}, {"n": 3}]},
        "both": {"results": [{"side": "l"}, {"side": "r"}]},
    }


def test_failing_outputs_template_fails_the_workflow(
    define: Define, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        define(
            """
            id: w
            tasks: [{id: a, tool: echo}]
            outputs: {bad: "{{ tasks.a.output.missing }}"}
            """
        )
    )

    final = engine.run("w")

    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error["code"] == "OUTPUT_TRANSFORMATION_FAILED"
    assert "missing" in final.error["message"]
    assert final.tasks["a"].status is Status.SUCCESS


def test_failed_workflow_has_no_output_and_the_task_error(run_yaml: RunYaml) -> None:
    final = run_yaml(
        """
        id: w
        tasks:
          - {id: fine, tool: echo, with: {x: 1}}
          - {id: boom, tool: fail, with: {message: bad}}
        """
    )

    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error["code"] == "TASK_FAILED"
    assert final.error["task_id"] == "boom"
    assert "bad" in final.error["message"]
    assert final.output is None


# --- input and unknown workflows ----------------------------------------------------------------

SCHEMA = """
id: typed
input:
  type: object
  properties:
    name: {type: string}
    user: {type: object, properties: {age: {type: integer, minimum: 0}}}
  required: [name]
tasks: [{id: a, tool: echo}]
"""


@pytest.mark.parametrize(
    ("input", "field"),
    [({}, "'name'"), ({"name": 3}, "input.name"), ({"name": "a", "user": {"age": -1}}, "user.age")],
)
@pytest.mark.parametrize("how", ["start", "run"])
def test_invalid_input_is_refused_before_anything_is_stored(
    define: Define,
    make_engine: MakeEngine,
    compozy_store: Store,
    input: dict[str, Any],
    field: str,
    how: str,
) -> None:
    engine = make_engine(define(SCHEMA))

    with pytest.raises(ValidationError) as info:
        getattr(engine, how)("typed", input)

    assert field in str(info.value)
    assert compozy_store.workflows.list_states() == []


def test_input_that_cannot_be_stored_is_refused(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    engine = make_engine(define("id: w\ntasks: [{id: a, tool: echo}]\n"))

    with pytest.raises(ValidationError, match="NaN"):
        engine.start("w", {"x": float("nan")})

    assert compozy_store.workflows.list_states() == []


def test_unknown_workflow_lists_the_known_ones(
    define: Define, make_engine: MakeEngine, compozy_store: Store
) -> None:
    definitions = define("id: beta\ntasks: [{id: a, tool: echo}]\n")
    definitions |= define("id: alpha\ntasks: [{id: a, tool: echo}]\n")
    engine = make_engine(definitions)

    with pytest.raises(
        UnknownWorkflow, match="no workflow definition with id 'x'; known: alpha, beta"
    ):
        engine.start("x")

    assert compozy_store.workflows.list_states() == []

"""The sandboxed templates: native values for a lone expression, text otherwise, strict names."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from compozy.core import Status
from compozy.engine.templates import FinishedTasks, TemplateFailure, Templates

from .conftest import RunYaml

CONTEXT: dict[str, Any] = {
    "input": {"names": ["a", "b"], "n": 3, "zip": "01234", "digits": "123", "user": {"x": 1}},
    "tasks": {"greet": {"output": {"text": "hi"}}},
}


@pytest.fixture
def templates() -> Templates:
    return Templates()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ input.names }}", ["a", "b"]),
        ("{{ input.n }}", 3),
        ("  {{ input.n + 1 }}  ", 4),
        ("{{ input.user }}", {"x": 1}),
        ("{{ input.n > 2 }}", True),
        ("{{ input.digits }}", "123"),  # a string that looks like a number stays a string
        ("{{ input.zip }}", "01234"),
        ("{{ '}}' }}", "}}"),
        ("{{ tasks.greet.output.text }}", "hi"),
        ("{{ range(3) }}", [0, 1, 2]),
        ("n={{ input.n }}", "n=3"),
        ("{{ input.n }}{{ input.n }}", "33"),
        ("{{ input.names }} and more", "['a', 'b'] and more"),
        ("{% if input.n %}yes{% endif %}", "yes"),
        ("line\n", "line\n"),
        ("{{ input.n }}\n", 3),
        ("plain text", "plain text"),
    ],
)
def test_render(templates: Templates, source: str, expected: Any) -> None:
    assert templates.render(source, CONTEXT) == expected


def test_native_results_are_copies(templates: Templates) -> None:
    rendered = templates.render("{{ input.user }}", CONTEXT)
    rendered["x"] = 99

    assert CONTEXT["input"]["user"] == {"x": 1}


def test_render_value_walks_dicts_and_lists(templates: Templates) -> None:
    value = {"a": ["{{ input.n }}", 2, {"b": "x{{ input.n }}"}], "c": None}

    assert templates.render_value(value, CONTEXT) == {"a": [3, 2, {"b": "x3"}], "c": None}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ input.missing }}", "has no attribute 'missing'"),
        ("hello {{ nobody }}", "'nobody' is undefined"),
        ("{{ [input.missing] }}", "has no attribute 'missing'"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ input.names.append(1) }}", "unsafe"),
        ("{{ 'x' * 100000000 }}", "exceeds the limit"),
        ("{{ 9 ** 100000000 }}", "too large"),
    ],
)
def test_render_failures_name_the_template(templates: Templates, source: str, problem: str) -> None:
    with pytest.raises(TemplateFailure) as info:
        templates.render(source, CONTEXT)

    assert problem in str(info.value)
    assert repr(source) in str(info.value)


def test_check_reports_syntax_errors_and_accepts_plain_text(templates: Templates) -> None:
    templates.check("no template here {")
    templates.check("{{ fine }}")
    with pytest.raises(jinja2.TemplateSyntaxError):
        templates.check("{{ broken ")


@pytest.mark.parametrize("task_id", ["copy", "items", "keys", "values", "get", "update", "pop"])
def test_task_ids_that_are_dict_method_names_find_the_task(
    templates: Templates, task_id: str
) -> None:
    context = {"tasks": FinishedTasks({task_id: {"output": {"n": 1}}})}

    assert templates.render(f"{{{{ tasks.{task_id}.output.n }}}}", context) == 1
    assert templates.render(f"{{{{ tasks['{task_id}'].output }}}}", context) == {"n": 1}


def test_an_unfinished_task_id_that_is_a_method_name_is_an_error_naming_it(
    templates: Templates,
) -> None:
    with pytest.raises(TemplateFailure, match="no task 'copy' has finished"):
        templates.render("{{ tasks.copy.output }}", {"tasks": FinishedTasks()})


def test_a_mapping_key_wins_over_a_dict_method_of_the_same_name(templates: Templates) -> None:
    context = {"input": {"items": [1, 2], "keys": "k"}}

    assert templates.render("{{ input.items }}", context) == [1, 2]
    assert templates.render("{{ input.keys | upper }}", context) == "K"
    # Without such a key, the method is still there.
    assert templates.render("{{ input.get('items') }}", context) == [1, 2]


def test_a_workflow_whose_task_ids_are_method_names_runs(run_yaml: RunYaml) -> None:
    final = run_yaml(
        """
        id: methods
        tasks:
          - {id: copy, tool: echo, with: {v: 1}}
          - {id: items, tool: echo, with: {v: "{{ tasks.copy.output.v + 1 }}"}}
          - {id: keys, tool: echo, with: {v: "{{ tasks['items'].output.v + 1 }}"}}
        outputs: {last: "{{ tasks.keys.output.v }}"}
        """,
        workflow_id="methods",
    )

    assert final.status is Status.SUCCESS, final.error
    assert final.output == {"last": 3}

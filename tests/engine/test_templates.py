"""The sandboxed templates: native values for a lone expression, text otherwise, strict names."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from compozy.engine.templates import TemplateFailure, Templates

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

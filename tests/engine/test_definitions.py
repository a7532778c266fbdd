"""Loading workflow definitions: the format, and every mistake reported with file + task id."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from compozy.core import ExecutionType
from compozy.engine import DefinitionError, RetryPolicy, load_definitions, parse_definition
from compozy.errors import ConfigError, ValidationError

from . import tools_for_tests
from .conftest import Define

TOOLS = tools_for_tests.__name__

EVERY_TYPE = """
id: every_type
description: one task of each type
input:
  type: object
  properties: {names: {type: array}, n: {type: integer}}
tasks:
  - id: greet
    tool: format
    with: {template: "Hello, {{ input.n }}!"}
  - id: steps
    type: composite
    tasks:
      - {id: one, tool: echo, with: {nested: {list: ["{{ input.n }}", 2]}}}
  - id: fan
    type: parallel
    strategy: fail_fast
    tasks:
      - {id: two, tool: echo}
  - id: each
    type: collection
    items: "{{ input.names }}"
    mode: sequential
    task: {id: hello_one, tool: format, with: {template: "hi {{ item }}"}}
  - id: pick
    type: router
    condition: "{{ input.n > 10 }}"
    routes:
      true: {id: big, tool: echo}
      false: {id: small, tool: TOOLS:add, with: {a: 1, b: 2}}
outputs:
  greeting: "{{ tasks.greet.output.text }}"
"""


def write(directory: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).replace("TOOLS", TOOLS), encoding="utf-8")
    return path


def load_error(directory: Path, text: str) -> tuple[Path, DefinitionError]:
    path = write(directory, text)
    with pytest.raises(DefinitionError) as info:
        load_definitions([path])
    return path, info.value


def test_every_task_type_loads_with_its_fields(tmp_path: Path) -> None:
    path = write(tmp_path, EVERY_TYPE)

    definitions = load_definitions([path])

    workflow = definitions["every_type"]
    assert workflow.source == str(path)
    assert workflow.description == "one task of each type"
    assert workflow.input_schema is not None
    assert workflow.outputs == {"greeting": "{{ tasks.greet.output.text }}"}
    by_id = {task.id: task for task in workflow.all_tasks()}
    assert list(by_id) == [
        "greet",
        "steps",
        "one",
        "fan",
        "two",
        "each",
        "hello_one",
        "pick",
        "big",
        "small",
    ]
    assert by_id["greet"].tool == "format"
    assert by_id["greet"].execution_type is ExecutionType.BASIC
    assert by_id["fan"].strategy == "fail_fast"
    assert by_id["each"].mode == "sequential"
    assert by_id["each"].task is by_id["hello_one"]
    # YAML reads `true:` as a boolean; routes are keyed by its text.
    assert set(by_id["pick"].routes) == {"true", "false"}
    assert by_id["small"].tool == f"{TOOLS}:add"
    assert by_id["pick"].execution_type is ExecutionType.ROUTER


def test_defaults_type_basic_strategy_wait_all_mode_parallel(define: Define) -> None:
    definitions = define(
        """
        id: defaults
        tasks:
          - {id: a, tool: echo}
          - {id: p, type: parallel, tasks: [{id: b, tool: echo}]}
          - {id: c, type: collection, items: [1, 2], task: {id: d, tool: echo}}
        """
    )

    tasks = {t.id: t for t in definitions["defaults"].all_tasks()}
    assert tasks["a"].type == "basic"
    assert tasks["p"].strategy == "wait_all"
    assert tasks["c"].mode == "parallel"
    assert tasks["c"].items == [1, 2]


def test_glob_loads_every_matching_file_once(tmp_path: Path) -> None:
    write(tmp_path, "id: first\ntasks: [{id: a, tool: echo}]\n", "a.yaml")
    write(tmp_path, "id: second\ntasks: [{id: a, tool: echo}]\n", "b.yaml")
    write(tmp_path, "not: a workflow\n", "c.txt")

    definitions = load_definitions([tmp_path / "*.yaml", tmp_path / "a.yaml"])

    assert sorted(definitions) == ["first", "second"]


def test_glob_matching_nothing_loads_nothing_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        definitions = load_definitions([tmp_path / "*.yaml"])

    assert definitions == {}
    assert "matches no file" in caplog.text


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(DefinitionError, match="does not exist") as info:
        load_definitions([missing])

    assert info.value.file == str(missing)
    assert isinstance(info.value, ConfigError)


def test_duplicate_workflow_ids_across_files_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "id: same\ntasks: [{id: a, tool: echo}]\n", "a.yaml")
    second = write(tmp_path, "id: same\ntasks: [{id: b, tool: echo}]\n", "b.yaml")

    with pytest.raises(DefinitionError) as info:
        load_definitions([first, second])

    message = str(info.value)
    assert str(first) in message
    assert str(second) in message
    assert "'same'" in message


# Each case: the YAML, the task id the error must name (None: a workflow-level problem), and
# words of the problem.
BAD_DEFINITIONS = {
    "unknown task key": (
        "id: w\ntasks: [{id: t1, tool: echo, wth: {a: 1}}]",
        "t1",
        "unknown key 'wth'",
    ),
    "unknown top-level key": ("id: w\ntsks: []\ntasks: [{id: t1, tool: echo}]", None, "'tsks'"),
    "workflow id missing": ("tasks: [{id: t1, tool: echo}]", None, "workflow id is missing"),
    "task id missing": ("id: w\ntasks: [{tool: echo}]", None, "tasks[0] is missing"),
    "bad task id": ("id: w\ntasks: [{id: 'has space', tool: echo}]", "has space", "not valid"),
    "tool missing": ("id: w\ntasks: [{id: t1, with: {a: 1}}]", "t1", "needs 'tool'"),
    "unknown type": ("id: w\ntasks: [{id: t1, type: loop, tool: echo}]", "t1", "'loop'"),
    "no tasks": ("id: w\ntasks: []", None, "non-empty list"),
    "duplicate task id in a nested task": (
        "id: w\ntasks:\n- {id: t1, tool: echo}\n"
        "- {id: c, type: composite, tasks: [{id: t1, tool: echo}]}",
        "t1",
        "used twice (tasks[0] and tasks[1].tasks[0])",
    ),
    "bad strategy": (
        "id: w\ntasks: [{id: p, type: parallel, strategy: first, tasks: [{id: a, tool: echo}]}]",
        "p",
        "strategy 'first'",
    ),
    "parallel without tasks": ("id: w\ntasks: [{id: p, type: parallel}]", "p", "needs 'tasks'"),
    "router without routes": (
        "id: w\ntasks: [{id: r, type: router, condition: x}]",
        "r",
        "needs 'routes'",
    ),
    "router without condition": (
        "id: w\ntasks: [{id: r, type: router, routes: {a: {id: a, tool: echo}}}]",
        "r",
        "needs 'condition'",
    ),
    "collection without items": (
        "id: w\ntasks: [{id: c, type: collection, task: {id: a, tool: echo}}]",
        "c",
        "needs 'items'",
    ),
    "collection without task": (
        "id: w\ntasks: [{id: c, type: collection, items: [1]}]",
        "c",
        "needs 'task'",
    ),
    "unknown built-in tool": ("id: w\ntasks: [{id: t1, tool: formt}]", "t1", "unknown tool"),
    "tool module missing": (
        "id: w\ntasks: [{id: t1, tool: 'no_such_module_xyz:fn'}]",
        "t1",
        "cannot import module 'no_such_module_xyz'",
    ),
    "tool function missing": (
        "id: w\ntasks: [{id: t1, tool: 'TOOLS:nope'}]",
        "t1",
        "has no attribute 'nope'",
    ),
    "tool not callable": (
        "id: w\ntasks: [{id: t1, tool: 'TOOLS:NOT_CALLABLE'}]",
        "t1",
        "not a callable",
    ),
    "tool arguments do not fit": (
        "id: w\ntasks: [{id: t1, tool: sleep, with: {secs: 1}}]",
        "t1",
        "cannot take the arguments",
    ),
    "template syntax error in with": (
        "id: w\ntasks: [{id: t1, tool: echo, with: {a: '{{ input.x '}}]",
        "t1",
        "syntax error",
    ),
    "template syntax error in items": (
        "id: w\ntasks: [{id: c, type: collection, items: '{% for %}', task: {id: a, tool: echo}}]",
        "c",
        "items has a syntax error",
    ),
    "template syntax error in condition": (
        "id: w\ntasks: [{id: r, type: router, condition: '{{ 1 + }}',"
        " routes: {a: {id: a, tool: echo}}}]",
        "r",
        "condition has a syntax error",
    ),
    "template syntax error in outputs": (
        "id: w\ntasks: [{id: t1, tool: echo}]\noutputs: {x: '{{ tasks. }}'}",
        None,
        "outputs.x has a syntax error",
    ),
    "invalid input schema": (
        "id: w\ninput: {type: objekt}\ntasks: [{id: t1, tool: echo}]",
        None,
        "not a valid JSON Schema",
    ),
    "invalid YAML": ("id: w\ntasks: [{id: t1, tool: echo, with: {a: {{ x }}}}]", None, "YAML"),
    "empty file": ("", None, "the file is empty"),
    "timeout not a duration": (
        "id: w\ntasks: [{id: t1, tool: echo, timeout: soon}]",
        "t1",
        "timeout must be a duration such as 30s",
    ),
    "timeout of zero": ("id: w\ntasks: [{id: t1, tool: echo, timeout: 0}]", "t1", "more than 0"),
    "negative timeout": ("id: w\ntasks: [{id: t1, tool: echo, timeout: -1s}]", "t1", "'-1s'"),
    "retries not a number": (
        "id: w\ntasks: [{id: t1, tool: echo, retries: two}]",
        "t1",
        "'retries' must be a whole number",
    ),
    "retries and retry": (
        "id: w\ntasks: [{id: t1, tool: echo, retries: 1, retry: {attempts: 2}}]",
        "t1",
        "either 'retries' or 'retry'",
    ),
    "retry without attempts": (
        "id: w\ntasks: [{id: t1, tool: echo, retry: {backoff: 1s}}]",
        "t1",
        "retry.attempts must be a whole number from 1 to 100",
    ),
    "retry with a bad backoff": (
        "id: w\ntasks: [{id: t1, tool: echo, retry: {attempts: 2, backoff: later}}]",
        "t1",
        "retry.backoff must be a duration",
    ),
    "retry with an unknown key": (
        "id: w\ntasks: [{id: t1, tool: echo, retry: {attempts: 2, delay: 1s}}]",
        "t1",
        "unknown key 'delay' in 'retry'",
    ),
    "retry on a container": (
        "id: w\ntasks: [{id: p, type: parallel, retries: 2, tasks: [{id: a, tool: echo}]}]",
        "p",
        "apply to basic tasks only",
    ),
}


@pytest.mark.parametrize(
    ("text", "task_id", "problem"), BAD_DEFINITIONS.values(), ids=BAD_DEFINITIONS.keys()
)
def test_invalid_definition_names_file_task_and_problem(
    tmp_path: Path, text: str, task_id: str | None, problem: str
) -> None:
    path, error = load_error(tmp_path, text)

    message = str(error)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert error.file == str(path)
    assert error.task_id == task_id
    if task_id is not None:
        assert f"task {task_id!r}" in message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    _, error = load_error(tmp_path, "id: w\ntasks: [{id: t1, tool: echo, wiht: {}}]")

    assert "did you mean 'with'?" in str(error)


def test_unquoted_template_yaml_error_says_to_quote(tmp_path: Path) -> None:
    _, error = load_error(tmp_path, "id: w\ntasks: [{id: t1, tool: echo, with: {a: {{ x }}}}]")

    assert "must be quoted" in str(error)


def test_yaml_nested_past_what_the_reader_takes_is_a_definition_error(tmp_path: Path) -> None:
    _, error = load_error(tmp_path, "id: deep\ntasks: " + "[" * 3000 + "]" * 3000)

    assert "nested too deeply to read" in str(error)


def test_a_timeout_longer_than_30_days_is_refused_at_load(tmp_path: Path) -> None:
    _, error = load_error(tmp_path, "id: w\ntasks: [{id: t, tool: echo, timeout: 1e10}]")

    assert "longer than the 30 days a timeout or a backoff may last" in str(error)


def test_parse_definition_validates_in_memory_data() -> None:
    definition = parse_definition({"id": "mem", "tasks": [{"id": "a", "tool": "echo"}]})

    assert definition.id == "mem"
    with pytest.raises(DefinitionError, match="<memory>: task 'a': unknown tool"):
        parse_definition({"id": "mem", "tasks": [{"id": "a", "tool": "x"}]}, "<memory>")


def test_validate_input_names_the_nested_field() -> None:
    definition = parse_definition(
        {
            "id": "w",
            "input": {
                "type": "object",
                "properties": {
                    "user": {"type": "object", "properties": {"age": {"type": "integer"}}}
                },
            },
            "tasks": [{"id": "a", "tool": "echo"}],
        }
    )

    assert definition.validate_input({"user": {"age": 3}}) == {"user": {"age": 3}}
    with pytest.raises(ValidationError, match=r"at input\.user\.age: 'old' is not of type"):
        definition.validate_input({"user": {"age": "old"}})
    with pytest.raises(ValidationError, match="must be a JSON object"):
        definition.validate_input(["not", "a", "dict"])


def test_validate_input_without_schema_accepts_any_object() -> None:
    definition = parse_definition({"id": "w", "tasks": [{"id": "a", "tool": "echo"}]})

    assert definition.validate_input(None) == {}
    assert definition.validate_input({"anything": [1]}) == {"anything": [1]}


def test_a_single_path_may_be_given_instead_of_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "id: one\ntasks: [{id: a, tool: echo}]\n")

    assert list(load_definitions(path)) == ["one"]
    assert list(load_definitions(str(path))) == ["one"]


def test_definition_error_keeps_its_parts_through_pickling(tmp_path: Path) -> None:
    import pickle

    _, error = load_error(tmp_path, "id: w\ntasks: [{id: t1, tool: nope}]")

    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == str(error)
    assert (copy.file, copy.task_id, copy.problem) == (error.file, error.task_id, error.problem)


def test_timeout_and_retry_load_as_seconds_and_a_policy(define: Define) -> None:
    definition = define(
        """
        id: limits
        tasks:
          - {id: a, tool: echo, timeout: 1m30s, retries: 2}
          - {id: b, tool: echo, timeout: 0.5, retry: {attempts: 4, backoff: 250ms,
             factor: 3, max_backoff: 1s}}
          - {id: p, type: parallel, timeout: 2s, tasks: [{id: c, tool: echo}]}
        """
    )["limits"]

    tasks = {t.id: t for t in definition.all_tasks()}
    assert (tasks["a"].timeout, tasks["b"].timeout, tasks["p"].timeout) == (90.0, 0.5, 2.0)
    assert (tasks["c"].timeout, tasks["c"].retry) == (None, None)
    assert tasks["a"].retry == RetryPolicy(attempts=3)  # Compozy's retries: 2 more tries
    assert tasks["b"].retry == RetryPolicy(attempts=4, backoff=0.25, factor=3.0, max_backoff=1.0)
    # The waits grow by the factor up to max_backoff.
    policy = tasks["b"].retry
    assert policy is not None
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.25, 0.75, 1.0]

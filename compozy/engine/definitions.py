"""Workflow definitions: the YAML format, its validation at load, and the definition objects.

Everything that can be checked before a run is checked here, so that a mistake in a file is
reported when the engine starts, with the file, the task id and the problem, rather than
half-way through an execution.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import jinja2
import jsonschema
from jsonschema.validators import validator_for

from compozy.config.models import parse_duration
from compozy.core import ExecutionType
from compozy.engine.templates import Templates
from compozy.engine.tools import ToolResolutionError, check_tool_arguments, resolve_tool
from compozy.errors import ConfigError, ValidationError

__all__ = [
    "DefinitionError",
    "RetryPolicy",
    "Strategy",
    "TaskDefinition",
    "TaskType",
    "WorkflowDefinition",
    "parse_definition",
    "route_key",
]

LOGGER_NAME = "compozy.engine"

TaskType = Literal["basic", "composite", "parallel", "collection", "router"]
Strategy = Literal["wait_all", "fail_fast"]
Mode = Literal["parallel", "sequential"]

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_MAX_ID = 255
_WORKFLOW_KEYS = ("id", "description", "input", "tasks", "outputs")
_COMMON_KEYS = ("id", "type", "description", "timeout")
_RETRY_KEYS = ("retries", "retry")
_RETRY_POLICY_KEYS = ("attempts", "backoff", "factor", "max_backoff")
_MAX_ATTEMPTS = 100
_TYPE_KEYS: Mapping[str, tuple[str, ...]] = {
    "basic": ("tool", "with", *_RETRY_KEYS),
    "composite": ("tasks",),
    "parallel": ("tasks", "strategy"),
    "collection": ("items", "task", "mode", "strategy"),
    "router": ("condition", "routes"),
}
_EXECUTION_TYPES: Mapping[str, ExecutionType] = {
    "basic": ExecutionType.BASIC,
    "composite": ExecutionType.COMPOSITE,
    "parallel": ExecutionType.PARALLEL,
    "collection": ExecutionType.COLLECTION,
    "router": ExecutionType.ROUTER,
}

MAX_DURATION = 30 * 86400.0
"""The longest timeout or retry backoff, 30 days: longer waits overflow the clock's timers."""


class DefinitionError(ConfigError):
    """A workflow definition is invalid; the message names the file, the task and the problem."""

    def __init__(self, file: str, problem: str, task_id: str | None = None) -> None:
        self.file = file
        self.task_id = task_id
        self.problem = problem
        where = f"task {task_id!r}: " if task_id else ""
        super().__init__(f"{file}: {where}{problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args (the message); rebuild from the parts instead.
        return (type(self), (self.file, self.problem, self.task_id))


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often a basic task's tool is tried, and how long to wait between tries.

    ``attempts`` counts every try, the first included. The wait before try ``n + 1`` is
    ``backoff * factor ** (n - 1)``, at most ``max_backoff`` seconds.
    """

    attempts: int
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 30.0

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` tries have failed."""
        grown = self.backoff * self.factor ** min(failed_attempts - 1, 64)
        return min(grown, self.max_backoff)


@dataclass(frozen=True, kw_only=True)
class TaskDefinition:
    """One task of a workflow definition; which fields matter depends on ``type``."""

    id: str
    type: TaskType = "basic"
    description: str | None = None
    tool: str | None = None
    with_args: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[TaskDefinition, ...] = ()
    strategy: Strategy = "wait_all"
    mode: Mode = "parallel"
    items: Any = None
    task: TaskDefinition | None = None
    condition: str | None = None
    routes: Mapping[str, TaskDefinition] = field(default_factory=dict)
    timeout: float | None = None
    """Seconds: a basic task's every attempt, or a container with all its children."""
    retry: RetryPolicy | None = None
    """Basic tasks only: try the tool again after it fails or times out."""

    @property
    def execution_type(self) -> ExecutionType:
        """The ``ExecutionType`` its task states are stored with."""
        return _EXECUTION_TYPES[self.type]

    def children(self) -> Iterator[TaskDefinition]:
        """The directly nested definitions (tasks, the collection template, the routes)."""
        yield from self.tasks
        if self.task is not None:
            yield self.task
        yield from self.routes.values()

    def walk(self) -> Iterator[TaskDefinition]:
        """This definition and every definition nested in it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass(frozen=True, kw_only=True)
class WorkflowDefinition:
    """A workflow: its id, input schema, top-level tasks and output templates."""

    id: str
    tasks: tuple[TaskDefinition, ...]
    description: str | None = None
    input_schema: Mapping[str, Any] | None = None
    outputs: Mapping[str, Any] | None = None
    source: str | None = None

    def all_tasks(self) -> Iterator[TaskDefinition]:
        """Every task definition, nested ones included, depth first."""
        for task in self.tasks:
            yield from task.walk()

    def validate_input(self, input: Any) -> dict[str, Any]:
        """Return ``input`` (``{}`` for None) or raise ``ValidationError`` naming the bad field."""
        value: Any = {} if input is None else input
        if not isinstance(value, dict):
            raise ValidationError(
                f"workflow {self.id!r} input must be a JSON object, got {type(value).__name__}"
            )
        if self.input_schema is None:
            return value
        schema = dict(self.input_schema)
        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return value
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        where = f" at input{path}" if path else ""
        raise ValidationError(
            f"workflow {self.id!r} input is invalid{where}: {error.message}; "
            "pass an input that matches the workflow's input schema"
        )


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def route_key(value: Any) -> str:
    """The text a router condition value or a route key stands for (YAML ``true`` is "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Parser:
    """Validates one file's data and builds its ``WorkflowDefinition``."""

    def __init__(self, source: str, templates: Templates) -> None:
        self.source = source
        self.templates = templates
        self.seen: dict[str, str] = {}  # task id -> where it was first defined

    def fail(self, problem: str, task: str | None = None) -> DefinitionError:
        return DefinitionError(self.source, problem, task)

    def workflow(self, data: Any) -> WorkflowDefinition:
        if data is None:
            raise self.fail("the file is empty; a workflow needs at least an id and tasks")
        if not isinstance(data, dict):
            raise self.fail(
                f"the file holds a {type(data).__name__}, but a workflow is a mapping with "
                "id, tasks and optionally description, input and outputs"
            )
        self.unknown_keys(data, _WORKFLOW_KEYS, "at the top level", None)
        workflow_id = self.identifier(data.get("id"), "workflow id", None)
        tasks_data = data.get("tasks")
        if not isinstance(tasks_data, list) or not tasks_data:
            raise self.fail("'tasks' must be a non-empty list of tasks")
        tasks = tuple(self.task(item, f"tasks[{i}]") for i, item in enumerate(tasks_data))
        outputs = data.get("outputs")
        if outputs is not None:
            if not isinstance(outputs, dict) or any(not isinstance(k, str) for k in outputs):
                raise self.fail("'outputs' must be a mapping of names to templates")
            self.templates_in(outputs, "outputs", None)
        return WorkflowDefinition(
            id=workflow_id,
            description=self.optional_text(data.get("description"), "description", None),
            input_schema=self.input_schema(data.get("input")),
            tasks=tasks,
            outputs=outputs,
            source=self.source,
        )

    def input_schema(self, schema: Any) -> dict[str, Any] | None:
        if schema is None:
            return None
        if not isinstance(schema, dict):
            raise self.fail("'input' must be a JSON Schema object (a mapping)")
        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the root"
            raise self.fail(
                f"'input' is not a valid JSON Schema (at {where}: {exc.message})"
            ) from None
        return schema

    def task(self, data: Any, loc: str) -> TaskDefinition:
        if not isinstance(data, dict):
            raise self.fail(f"the task at {loc} must be a mapping, got {type(data).__name__}")
        label = data.get("id") if isinstance(data.get("id"), str) and data.get("id") else None
        task_id = self.identifier(data.get("id"), f"id of the task at {loc}", label)
        if task_id in self.seen:
            raise self.fail(
                f"the task id is used twice ({self.seen[task_id]} and {loc}); task ids must be "
                "unique within a workflow, nested tasks included",
                task_id,
            )
        self.seen[task_id] = loc
        kind = data.get("type", "basic")
        if kind not in _TYPE_KEYS:
            raise self.fail(
                f"unknown task type {kind!r}; use one of {', '.join(_TYPE_KEYS)}", task_id
            )
        if kind != "basic" and any(key in data for key in _RETRY_KEYS):
            raise self.fail(
                f"'retries' and 'retry' apply to basic tasks only, not to a {kind} task; give "
                "them to the basic tasks inside it",
                task_id,
            )
        self.unknown_keys(data, (*_COMMON_KEYS, *_TYPE_KEYS[kind]), f"in a {kind} task", task_id)
        base: dict[str, Any] = {
            "id": task_id,
            "type": kind,
            "description": self.optional_text(data.get("description"), "description", task_id),
            "timeout": self.duration(data, "timeout", task_id),
        }
        if kind == "basic":
            return TaskDefinition(**base, **self.basic(data, task_id))
        if kind in ("composite", "parallel"):
            children = data.get("tasks")
            if not isinstance(children, list) or not children:
                raise self.fail(f"a {kind} task needs 'tasks', a non-empty list", task_id)
            if kind == "parallel":
                base["strategy"] = self.choice(data, "strategy", Strategy, task_id)
            nested = tuple(self.task(c, f"{loc}.tasks[{i}]") for i, c in enumerate(children))
            return TaskDefinition(**base, tasks=nested)
        if kind == "collection":
            return TaskDefinition(**base, **self.collection(data, loc, task_id))
        return TaskDefinition(**base, **self.router(data, loc, task_id))

    def basic(self, data: dict[str, Any], task_id: str) -> dict[str, Any]:
        tool = data.get("tool")
        if not isinstance(tool, str) or not tool.strip():
            raise self.fail(
                "a basic task needs 'tool': a built-in tool (echo, fail, format, sleep) or "
                "'package.module:function'",
                task_id,
            )
        arguments = data.get("with")
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict) or any(not isinstance(k, str) for k in arguments):
            raise self.fail("'with' must be a mapping of argument names to values", task_id)
        try:
            check_tool_arguments(tool, resolve_tool(tool), arguments)
        except ToolResolutionError as exc:
            raise self.fail(str(exc), task_id) from None
        self.templates_in(arguments, "with", task_id)
        return {"tool": tool, "with_args": arguments, "retry": self.retry(data, task_id)}

    def retry(self, data: dict[str, Any], task_id: str) -> RetryPolicy | None:
        """``retries: N`` (N more tries, as in Compozy) or ``retry: {attempts, backoff, ...}``."""
        if "retries" in data and "retry" in data:
            raise self.fail("give either 'retries' or 'retry', not both", task_id)
        if "retries" in data:
            retries = data["retries"]
            if not _whole(retries) or not 0 <= retries < _MAX_ATTEMPTS:
                raise self.fail(
                    f"'retries' must be a whole number from 0 to {_MAX_ATTEMPTS - 1} (how many "
                    f"more times to try after a failure), got {retries!r}",
                    task_id,
                )
            return RetryPolicy(attempts=retries + 1) if retries else None
        policy = data.get("retry")
        if policy is None:
            return None
        if not isinstance(policy, dict):
            raise self.fail("'retry' must be a mapping such as {attempts: 3, backoff: 1s}", task_id)
        self.unknown_keys(policy, _RETRY_POLICY_KEYS, "in 'retry'", task_id)
        attempts = policy.get("attempts")
        if (
            not isinstance(attempts, int)
            or not _whole(attempts)
            or not 1 <= attempts <= _MAX_ATTEMPTS
        ):
            raise self.fail(
                f"retry.attempts must be a whole number from 1 to {_MAX_ATTEMPTS} (every try, "
                f"the first included), got {attempts!r}",
                task_id,
            )
        factor = policy.get("factor", RetryPolicy.factor)
        if not _number(factor) or not 1 <= factor <= 10:
            raise self.fail(f"retry.factor must be a number from 1 to 10, got {factor!r}", task_id)
        backoff = self.duration(policy, "backoff", task_id, "retry.", zero=True)
        most = self.duration(policy, "max_backoff", task_id, "retry.", zero=True)
        return RetryPolicy(
            attempts=attempts,
            backoff=RetryPolicy.backoff if backoff is None else backoff,
            factor=float(factor),
            max_backoff=RetryPolicy.max_backoff if most is None else most,
        )

    def duration(
        self, data: dict[str, Any], key: str, task: str, prefix: str = "", *, zero: bool = False
    ) -> float | None:
        """Seconds from a number or text like "30s", "500ms", "1m30s"; None when absent."""
        value = data.get(key)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except Exception:  # noqa: BLE001 - pydantic's error; the message below says it all
            seconds = None
        if not isinstance(seconds, float) or not math.isfinite(seconds) or seconds < 0:
            seconds = None
        elif seconds > MAX_DURATION:
            raise self.fail(
                f"{prefix}{key} is {value!r}, longer than the {MAX_DURATION // 86400:g} days a "
                "timeout or a backoff may last",
                task,
            )
        if seconds is None or (seconds == 0 and not zero):
            least = "0 or more" if zero else "more than 0"
            raise self.fail(
                f"{prefix}{key} must be a duration such as 30s, 500ms or 1m30s, or a number of "
                f"seconds, {least}; got {value!r}",
                task,
            )
        return seconds

    def collection(self, data: dict[str, Any], loc: str, task_id: str) -> dict[str, Any]:
        items = data.get("items")
        if not isinstance(items, str | list):
            raise self.fail(
                "a collection task needs 'items': a template that renders to a list, such as "
                '"{{ input.names }}", or a list',
                task_id,
            )
        self.templates_in(items, "items", task_id)
        if not isinstance(data.get("task"), dict):
            raise self.fail(
                "a collection task needs 'task': the task run once per item (a mapping)", task_id
            )
        return {
            "items": items,
            "task": self.task(data["task"], f"{loc}.task"),
            "mode": self.choice(data, "mode", Mode, task_id),
            "strategy": self.choice(data, "strategy", Strategy, task_id),
        }

    def router(self, data: dict[str, Any], loc: str, task_id: str) -> dict[str, Any]:
        condition = data.get("condition")
        if not isinstance(condition, str) or not condition.strip():
            raise self.fail(
                "a router task needs 'condition': a template that renders to a route name",
                task_id,
            )
        self.templates_in(condition, "condition", task_id)
        routes = data.get("routes")
        if not isinstance(routes, dict) or not routes:
            raise self.fail(
                "a router task needs 'routes': a non-empty mapping of route names to tasks",
                task_id,
            )
        parsed: dict[str, TaskDefinition] = {}
        for key, child in routes.items():
            name = route_key(key)
            if name in parsed:
                raise self.fail(f"route {name!r} is given twice", task_id)
            parsed[name] = self.task(child, f"{loc}.routes.{name}")
        return {"condition": condition, "routes": parsed}

    def identifier(self, value: Any, what: str, task: str | None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(f"the {what} is missing; give it an 'id'", task)
        if len(value) > _MAX_ID or not _ID.match(value):
            raise self.fail(
                f"the {what} {value!r} is not valid; use at most {_MAX_ID} letters, digits, "
                "'_' and '-', not starting with '-'",
                task,
            )
        return value

    def optional_text(self, value: Any, what: str, task: str | None) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise self.fail(f"'{what}' must be text, got {type(value).__name__}", task)

    def choice(self, data: dict[str, Any], key: str, allowed: Any, task: str) -> Any:
        options = get_args(allowed)
        value = data.get(key, options[0])
        if value not in options:
            raise self.fail(f"{key} {value!r} is not valid; use one of {', '.join(options)}", task)
        return value

    def unknown_keys(
        self, data: dict[str, Any], allowed: tuple[str, ...], where: str, task: str | None
    ) -> None:
        for key in data:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.fail(
                f"unknown key {key!r} {where}{hint}; allowed keys: {', '.join(sorted(allowed))}",
                task,
            )

    def templates_in(self, value: Any, where: str, task: str | None) -> None:
        """Compile every string in ``value`` so syntax errors surface at load."""
        if isinstance(value, str):
            try:
                self.templates.check(value)
            except jinja2.TemplateSyntaxError as exc:
                raise self.fail(
                    f"the template in {where} has a syntax error: {exc.message} "
                    f"(line {exc.lineno} of {value!r})",
                    task,
                ) from None
        elif isinstance(value, dict):
            for key, item in value.items():
                self.templates_in(item, f"{where}.{key}", task)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.templates_in(item, f"{where}[{index}]", task)


def parse_definition(data: Any, source: str = "<definition>") -> WorkflowDefinition:
    """Validate already-parsed YAML data; ``source`` names it in errors."""
    return _Parser(source, Templates()).workflow(data)

"""Sandboxed Jinja2 templates for task arguments, collection items, router conditions, outputs.

A string that is exactly one ``{{ expression }}`` (surrounding whitespace aside) evaluates to
the expression's native value, so ``"{{ input.names }}"`` gives the list itself; any other
string renders to text. Jinja's own ``NativeEnvironment`` is not used because it runs
``ast.literal_eval`` on rendered text, which would turn the string ``"123"`` into an int.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["FinishedTasks", "TemplateFailure", "Templates", "has_template_syntax"]

# Lazy, and anchored at both ends, so a `}}` inside a string literal stays in the capture;
# the parse check in `_compile` decides whether the capture really is one expression.
_SINGLE_EXPRESSION = re.compile(r"\A\s*\{\{-?(.*?)-?\}\}\s*\Z", re.DOTALL)
_MARKERS = ("{{", "{%", "{#")

# The sandbox stops attribute escapes but not a template that allocates gigabytes;
# these bounds keep `'x' * 10**10` or `9 ** 10**9` from taking the worker down.
_MAX_REPEAT_LENGTH = 1_000_000
_MAX_EXPONENT = 10_000
_MAX_SHOWN = 80


class TemplateFailure(Exception):
    """A template could not be rendered; the message names the template and the problem."""


def has_template_syntax(text: str) -> bool:
    """True when ``text`` contains Jinja markers; other strings are used as they are."""
    return any(marker in text for marker in _MARKERS)


def _shown(source: str) -> str:
    text = source if len(source) <= _MAX_SHOWN else f"{source[: _MAX_SHOWN - 3]}..."
    return repr(text)


class FinishedTasks(dict[str, Any]):
    """``tasks`` in a template: task id -> ``{"output", "status", "error"}``.

    ``tasks.<id>`` only ever looks up a task: an id such as ``copy``, ``items`` or ``keys`` is
    the task, not the dict method, and an id that has not finished is an error that says so.
    """


class _Sandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox that also bounds repetition and exponentiation, and where a
    mapping's key wins over a method of the same name (``input.items`` is the key)."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, FinishedTasks):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(
                f"no task {attribute!r} has finished (yet): tasks.<id> reads only the tasks "
                "that finished before this template runs",
                obj=obj,
                name=attribute,
            )
        if isinstance(obj, Mapping) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, FinishedTasks) and isinstance(argument, str) and argument not in obj:
            return self.getattr(obj, argument)  # the same message as tasks.<id>
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _huge_power(left, right):
            raise SecurityError(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                length = _repeated_length(sequence, times)
                if length > _MAX_REPEAT_LENGTH:
                    raise SecurityError(
                        f"repeating a sequence to {length} items exceeds the limit of "
                        f"{_MAX_REPEAT_LENGTH}"
                    )
        return super().call_binop(context, operator, left, right)


def _huge_power(base: Any, exponent: Any) -> bool:
    if isinstance(base, int | float) and abs(base) <= 1:
        return False  # 1 ** 10**9 is cheap and small
    return isinstance(exponent, int) and abs(exponent) > _MAX_EXPONENT


def _repeated_length(sequence: Any, times: Any) -> int:
    if isinstance(sequence, str | list | tuple) and isinstance(times, int):
        return len(sequence) * times
    return 0


class _Compiled:
    """One compiled template: a native expression or a text template."""

    def __init__(
        self,
        source: str,
        expression: jinja2.environment.TemplateExpression | None,
        template: jinja2.Template | None,
    ) -> None:
        self.source = source
        self.expression = expression
        self.template = template


class Templates:
    """Compiles and renders templates in one sandboxed environment; safe to share by threads."""

    def __init__(self) -> None:
        self._env = _Sandbox(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        # Compiling costs far more than rendering; a dict is enough because a race between
        # two threads only compiles the same template twice.
        self._cache: dict[str, _Compiled] = {}

    def check(self, source: str) -> None:
        """Compile ``source``; raise ``jinja2.TemplateSyntaxError`` if it is not a template."""
        if has_template_syntax(source):
            self._compile(source)

    def render(self, source: str, context: Mapping[str, Any]) -> Any:
        """Render one string: the native value for a lone expression, else text."""
        if not has_template_syntax(source):
            return source
        try:
            compiled = self._compile(source)
            if compiled.expression is not None:
                return _plain(compiled.expression(**context))
            assert compiled.template is not None
            return compiled.template.render(**context)
        except TemplateFailure:
            raise
        except Exception as exc:  # any error inside a template is the template's
            raise TemplateFailure(
                f"template {_shown(source)} failed: {exc or type(exc).__name__}"
            ) from exc

    def render_value(self, value: Any, context: Mapping[str, Any]) -> Any:
        """Render every string inside ``value`` (dicts and lists recursively); keep the rest."""
        if isinstance(value, str):
            return self.render(value, context)
        if isinstance(value, Mapping):
            return {key: self.render_value(item, context) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.render_value(item, context) for item in value]
        return value

    def _compile(self, source: str) -> _Compiled:
        found = self._cache.get(source)
        if found is not None:
            return found
        parsed = self._env.parse(source)
        expression = None
        match = _SINGLE_EXPRESSION.match(source)
        if match is not None and _is_single_expression(parsed):
            try:
                expression = self._env.compile_expression(match[1], undefined_to_none=False)
            except jinja2.TemplateSyntaxError:
                expression = None  # not one expression after all: render it as text
        template = None if expression is not None else self._env.from_string(source)
        compiled = self._cache[source] = _Compiled(source, expression, template)
        return compiled


def _is_single_expression(parsed: nodes.Template) -> bool:
    if len(parsed.body) != 1 or not isinstance(parsed.body[0], nodes.Output):
        return False
    meaningful = [
        node
        for node in parsed.body[0].nodes
        if not (isinstance(node, nodes.TemplateData) and not node.data.strip())
    ]
    return len(meaningful) == 1 and not isinstance(meaningful[0], nodes.TemplateData)


def _plain(value: Any) -> Any:
    """A private copy of a native result, with Jinja's types turned into plain ones.

    Copying matters: a lone ``{{ input.user }}`` returns the engine's own dict, which a tool
    could otherwise mutate. An undefined value nested in a list raises here, not in a tool.
    """
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming what is undefined
    if isinstance(value, str):
        return str(value)  # Markup -> str
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | range):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)

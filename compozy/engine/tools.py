"""Tools: the Python callables that basic tasks run, built-in or named ``module:function``."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from compozy.core.values import check_json_object
from compozy.errors import CompozyError, ValidationError
from compozy.usage import UsageEntry, UsageSummary

__all__ = [
    "BUILTIN_TOOLS",
    "ToolError",
    "ToolFunction",
    "ToolResolutionError",
    "ToolResult",
    "check_tool_arguments",
    "resolve_tool",
    "tool_outcome",
]

ToolFunction = Callable[..., Any]
"""``fn(**with_args) -> dict | ToolResult | None``."""


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns when it also reports token usage."""

    output: dict[str, Any]
    usage: UsageSummary | list[UsageEntry] | None = None


class ToolError(Exception):
    """Raise from a tool to fail its task with this message (any exception does the same)."""


class ToolResolutionError(CompozyError):
    """A tool name names no built-in and no importable callable."""


def _echo(**arguments: Any) -> dict[str, Any]:
    """Return the arguments as the output."""
    return dict(arguments)


def _sleep(seconds: Any) -> dict[str, Any]:
    """Sleep ``seconds`` (a number >= 0), then return ``{"slept": seconds}``."""
    try:
        delay = float(seconds)
    except (TypeError, ValueError):
        raise ToolError(f"sleep needs seconds as a number, got {seconds!r}") from None
    if isinstance(seconds, bool) or not delay >= 0:
        raise ToolError(f"sleep needs seconds as a number >= 0, got {seconds!r}")
    time.sleep(delay)
    return {"slept": seconds}


def _fail(message: Any = "the fail tool was called") -> dict[str, Any]:
    """Always raise: for trying out failure handling."""
    raise ToolError(str(message))


def _format(template: Any) -> dict[str, Any]:
    """Return the already rendered ``template`` as ``{"text": ...}``."""
    return {"text": template if isinstance(template, str) else str(template)}


def _knowledge_search(kb: Any, query: Any, top_k: Any = None) -> dict[str, Any]:
    """Search knowledge base ``kb`` for ``query``: ``{"matches": [{id, score, text, source,
    chunk_index}]}`` (docs/knowledge.md)."""
    from compozy.knowledge.bases import knowledge_search

    return knowledge_search(kb, query, top_k)


BUILTIN_TOOLS: Mapping[str, ToolFunction] = MappingProxyType(
    {
        "echo": _echo,
        "sleep": _sleep,
        "fail": _fail,
        "format": _format,
        "knowledge_search": _knowledge_search,
    }
)


def _builtin_names() -> str:
    return ", ".join(sorted(BUILTIN_TOOLS))


def resolve_tool(name: str) -> ToolFunction:
    """The callable a tool name refers to; ``ToolResolutionError`` says why there is none."""
    builtin = BUILTIN_TOOLS.get(name)
    if builtin is not None:
        return builtin
    module_name, colon, attribute = name.partition(":")
    if not colon or not module_name or not attribute:
        raise ToolResolutionError(
            f"unknown tool {name!r}; use a built-in tool ({_builtin_names()}) or name a Python "
            "callable as 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # importing user code can raise anything
        raise ToolResolutionError(
            f"tool {name!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc}); check the module is on the Python path"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ToolResolutionError(
                f"tool {name!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ToolResolutionError(
            f"tool {name!r}: {attribute!r} in {module_name!r} is a "
            f"{type(target).__name__}, not a callable"
        )
    return target  # type: ignore[no-any-return]


def check_tool_arguments(name: str, fn: ToolFunction, argument_names: Iterable[str]) -> None:
    """Raise ``ToolResolutionError`` if ``fn`` cannot be called with these keyword arguments."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some C callables have no signature; the call itself will tell
    try:
        signature.bind(**dict.fromkeys(argument_names))
    except TypeError as exc:
        raise ToolResolutionError(
            f"tool {name!r} cannot take the arguments given in 'with' ({exc}); "
            f"its signature is {name}{signature}"
        ) from None


def tool_outcome(name: str, value: Any) -> tuple[dict[str, Any], UsageSummary | None]:
    """Split a tool's return value into a storable output and its usage (or raise ToolError)."""
    usage: UsageSummary | None = None
    output: Any = value
    if isinstance(value, ToolResult):
        output = value.output
        usage = _usage(name, value.usage)
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise ToolError(
            f"tool {name!r} returned a {type(output).__name__}; a tool returns a dict "
            "(or a ToolResult holding one)"
        )
    try:
        checked = check_json_object(output, f"output of tool {name!r}")
    except ValidationError as exc:
        raise ToolError(str(exc)) from None
    assert checked is not None
    return checked, usage


def _usage(name: str, usage: Any) -> UsageSummary | None:
    if usage is None:
        return None
    try:
        if isinstance(usage, UsageSummary):
            summary = UsageSummary(entries=list(usage.entries))
        elif isinstance(usage, list):
            entries = [
                item if isinstance(item, UsageEntry) else UsageEntry.from_json(item)
                for item in usage
            ]
            summary = UsageSummary(entries=entries)
        else:
            raise ValidationError(
                f"usage is a {type(usage).__name__}; give a UsageSummary or a list of UsageEntry"
            )
    except ValidationError as exc:
        raise ToolError(f"tool {name!r} reported invalid usage: {exc}") from None
    return None if summary.is_empty() else summary

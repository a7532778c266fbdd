"""Tool results: outputs must be storable JSON objects; usage comes in several shapes."""

from __future__ import annotations

from typing import Any, cast

import pytest

from compozy.engine import BUILTIN_TOOLS, ToolError, ToolResult
from compozy.engine.tools import ToolResolutionError, resolve_tool, tool_outcome
from compozy.usage import UsageEntry, UsageSummary

ENTRY = UsageEntry(provider="p", model="m", prompt_tokens=2, completion_tokens=3)


@pytest.mark.parametrize(
    "usage",
    [
        UsageSummary(entries=[ENTRY]),
        [ENTRY],
        [ENTRY.to_json()],
    ],
    ids=["summary", "entries", "json entries"],
)
def test_usage_may_be_a_summary_or_a_list_of_entries(usage: Any) -> None:
    output, summary = tool_outcome("t", ToolResult(output={"ok": True}, usage=usage))

    assert output == {"ok": True}
    assert summary is not None
    assert [(e.provider, e.model, e.total_tokens) for e in summary.entries] == [("p", "m", 5)]


def test_empty_usage_counts_as_none() -> None:
    assert tool_outcome("t", ToolResult(output={}, usage=[])) == ({}, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (ToolResult(output={}, usage=cast(Any, "lots")), "reported invalid usage"),
        (ToolResult(output={}, usage=cast(Any, [{"provider": "p"}])), "reported invalid usage"),
        ({"x": float("inf")}, "NaN or infinite"),
        ({"x": {1, 2}}, "holds a set"),
        ("text", "returned a str"),
    ],
)
def test_unusable_results_are_tool_errors(value: Any, problem: str) -> None:
    with pytest.raises(ToolError, match=problem):
        tool_outcome("t", value)


def test_none_is_an_empty_output() -> None:
    assert tool_outcome("t", None) == ({}, None)


def test_builtins() -> None:
    assert BUILTIN_TOOLS["echo"](a=1, b=[2]) == {"a": 1, "b": [2]}
    assert BUILTIN_TOOLS["format"](template=3) == {"text": "3"}
    assert BUILTIN_TOOLS["sleep"](seconds="0") == {"slept": "0"}
    with pytest.raises(ToolError, match="as a number"):
        BUILTIN_TOOLS["sleep"](seconds="soon")
    with pytest.raises(ToolError, match="as a number >= 0"):
        BUILTIN_TOOLS["sleep"](seconds=True)
    with pytest.raises(ToolError, match="custom"):
        BUILTIN_TOOLS["fail"](message="custom")


@pytest.mark.parametrize("name", ["nothing", ":fn", "module:", "os:path.nope"])
def test_unresolvable_tool_names(name: str) -> None:
    with pytest.raises(ToolResolutionError):
        resolve_tool(name)


def test_dotted_attribute_after_the_colon_is_followed() -> None:
    import os.path

    assert resolve_tool("os:path.join") is os.path.join

"""User tools for the engine tests, referenced from YAML as ``<this module>:<function>``.

Tests build the reference from ``tools_for_tests.__name__``, so it names the module object
pytest imported, whatever import mode or rootdir is in use, and the gates below are shared.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from compozy.engine import ToolError, ToolResult
from compozy.usage import UsageEntry

GATES: dict[str, threading.Event] = {}
NOT_CALLABLE = 42
GATE_TIMEOUT = 30.0


def _gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def open_gate(name: str) -> None:
    """Let every ``gate`` task waiting on ``name`` (now or later) finish."""
    _gate(name).set()


def open_all_gates() -> None:
    """Release every gate, so no engine thread outlives a failed test by GATE_TIMEOUT."""
    for event in list(GATES.values()):
        event.set()


def gate(name: str) -> dict[str, Any]:
    """Block until the test opens gate ``name``: holds a task RUNNING without timing guesses."""
    if not _gate(name).wait(GATE_TIMEOUT):
        raise ToolError(f"gate {name!r} was never opened")
    return {"gate": name}


def report_usage(tokens: int, model: str = "model-a") -> ToolResult:
    """Pretend to call an LLM that used ``tokens`` prompt tokens and 1 completion token."""
    entry = UsageEntry(provider="testprov", model=model, prompt_tokens=tokens, completion_tokens=1)
    return ToolResult(output={"tokens": tokens}, usage=[entry])


def add(a: int, b: int) -> dict[str, Any]:
    """Add two numbers (checks that native template values arrive as numbers)."""
    return {"sum": a + b}


def returns_a_list() -> Any:
    """A broken tool: tools must return a dict."""
    return [1, 2, 3]


CALLS: dict[str, list[float]] = {}


def flaky(key: str, failures: int) -> dict[str, Any]:
    """Fail the first ``failures`` calls with this ``key``, then succeed; each call's
    monotonic time is kept in ``CALLS[key]``."""
    calls = CALLS.setdefault(key, [])
    calls.append(time.monotonic())
    if len(calls) <= failures:
        raise ToolError(f"call {len(calls)} failed")
    return {"call": len(calls)}


def slow(key: str, seconds: float) -> dict[str, Any]:
    """Sleep ``seconds`` (each call counted in ``CALLS[key]``); a task to time out."""
    CALLS.setdefault(key, []).append(time.monotonic())
    time.sleep(seconds)
    return {"slept": seconds}

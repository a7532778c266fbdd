"""Fixtures for the engine tests: YAML definitions written to tmp_path, engines closed after."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from compozy.engine import Engine, WorkflowDefinition, load_definitions
from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy.workflow import WorkflowState

from . import tools_for_tests

TOOLS = tools_for_tests.__name__

Define = Callable[[str], dict[str, WorkflowDefinition]]
MakeEngine = Callable[..., Engine]


class RunYaml(Protocol):
    def __call__(
        self,
        text: str,
        input: dict[str, Any] | None = None,
        *,
        workflow_id: str = "w",
        within: float | None = None,
        **engine_options: Any,
    ) -> WorkflowState: ...


@pytest.fixture
def define(tmp_path: Path) -> Define:
    """Write YAML (dedented; ``TOOLS`` is replaced by this module path) and load it."""
    counter = iter(range(1_000_000))

    def write(text: str) -> dict[str, WorkflowDefinition]:
        path = tmp_path / f"workflow_{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text).replace("TOOLS", TOOLS), encoding="utf-8")
        return load_definitions([path])

    return write


@pytest.fixture
def make_engine(compozy_store: Store) -> Iterator[MakeEngine]:
    """Engines on ``compozy_store``, all closed (their work finished) before the store is wiped."""
    engines: list[Engine] = []

    def make(definitions: dict[str, WorkflowDefinition], **kwargs: Any) -> Engine:
        engine = Engine(compozy_store, definitions, **kwargs)
        engines.append(engine)
        return engine

    yield make
    tools_for_tests.open_all_gates()
    for engine in engines:
        engine.close(wait=True)


@pytest.fixture
def run_yaml(define: Define, make_engine: MakeEngine) -> RunYaml:
    """Define the workflows of ``text``, run ``workflow_id`` with ``input`` on a new engine
    (given ``engine_options``) and return its final state; with ``within``, check that the run
    came back in less than that many seconds."""

    def run(
        text: str,
        input: dict[str, Any] | None = None,
        *,
        workflow_id: str = "w",
        within: float | None = None,
        **engine_options: Any,
    ) -> WorkflowState:
        engine = make_engine(define(text), **engine_options)
        started = time.monotonic()
        final = engine.run(workflow_id, input)
        took = time.monotonic() - started
        assert within is None or took < within, f"the run took {took:.1f}s, not under {within}s"
        return final

    return run


@pytest.fixture
def gate_name() -> str:
    """A gate name of this test alone (gates stay open once opened)."""
    return uuid.uuid4().hex


def tasks_by_id(store: Store, exec_id: str) -> dict[str, list[TaskState]]:
    """Every task state of the execution grouped by task_id, in creation order."""
    grouped: dict[str, list[TaskState]] = {}
    for task in store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id)):
        grouped.setdefault(task.task_id, []).append(task)
    return grouped

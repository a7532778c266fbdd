"""WorkflowCatalog: broken files left out and reported, files re-read when they change."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from compozy.core import Status
from compozy.engine import Engine, UnknownWorkflow, WorkflowCatalog
from compozy.store import Store

from . import tools_for_tests

TOOLS = tools_for_tests.__name__


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text.replace("TOOLS", TOOLS))
    later = time.time() + 10 + len(text) / 1000  # a new mtime even within one clock tick
    os.utime(path, (later, later))
    return path


def test_a_broken_file_is_left_out_and_reported_once_while_the_others_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "good", "id: good\ntasks: [{id: a, tool: echo}]\n")
    broken = _write(tmp_path, "bad", "id: broken\ntasks: [{id: a, tool: nope}]\n")

    with caplog.at_level(logging.WARNING, logger="compozy.engine"):
        catalog = WorkflowCatalog([tmp_path / "*.yaml"], interval=0)
        assert catalog.refresh() is False  # nothing changed: not said again

    assert sorted(catalog.definitions) == ["good"]
    assert list(catalog.problems) == [str(broken)]
    assert len(caplog.messages) == 1, caplog.messages
    assert caplog.messages[0].startswith(f"Workflow file {broken} is not loaded: task 'a': ")
    assert "'nope'" in caplog.messages[0]
    assert caplog.messages[0].endswith("; the other workflows are.")
    # Found by the id written in it and by its file name.
    for workflow_id in ("broken", "bad"):
        problem = catalog.unavailable(workflow_id)
        assert problem is not None
        assert problem.file == str(broken)
    assert catalog.unavailable("good") is None


def test_a_duplicate_id_loads_the_first_file_and_the_second_once_the_first_is_gone(
    tmp_path: Path,
) -> None:
    first = _write(tmp_path, "a", "id: same\ntasks: [{id: one, tool: echo}]\n")
    second = _write(tmp_path, "b", "id: same\ntasks: [{id: two, tool: echo}]\n")
    catalog = WorkflowCatalog([tmp_path / "*.yaml"], interval=0)
    assert catalog.definitions["same"].source == str(first)
    assert "also defined in" in str(catalog.problems[str(second)])

    first.unlink()

    assert catalog.refresh() is True
    assert catalog.definitions["same"].source == str(second)
    assert catalog.problems == {}


def test_an_engine_on_a_catalog_runs_a_file_added_or_fixed_after_it_started(
    tmp_path: Path, compozy_store: Store
) -> None:
    _write(tmp_path, "bad", "id: bad\ntasks: [{id: a, tool: echo, wth: 1}]\n")
    with Engine(compozy_store, WorkflowCatalog([tmp_path / "*.yaml"])) as engine:
        with pytest.raises(UnknownWorkflow, match="'bad' is unavailable: its file does not load"):
            engine.run("bad")
        _write(tmp_path, "bad", "id: bad\ntasks: [{id: a, tool: echo, with: {fixed: 1}}]\n")
        _write(tmp_path, "new", "id: new\ntasks: [{id: a, tool: echo}]\n")

        # An unknown id looks at the files again (at most every 0.25s).
        time.sleep(0.3)
        assert engine.run("bad").output == {"a": {"fixed": 1}}
        assert engine.run("new").status is Status.SUCCESS


def test_an_execution_keeps_the_definition_it_started_with(
    tmp_path: Path, compozy_store: Store, gate_name: str
) -> None:
    text = (
        'id: w\ntasks:\n- {id: g, tool: "TOOLS:gate", with: {name: NAME}}\n'
        "- {id: v, tool: echo, with: {v: V}}\n"
    )
    _write(tmp_path, "w", text.replace("NAME", gate_name).replace("V", "1"))
    catalog = WorkflowCatalog([tmp_path / "*.yaml"], interval=0)
    with Engine(compozy_store, catalog) as engine:
        old = engine.start("w")
        deadline = time.monotonic() + 30
        while engine.store.workflows.get_state(old).tasks.get("g") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _write(tmp_path, "w", text.replace("NAME", gate_name).replace("V", "2"))
        assert catalog.refresh() is True
        new = engine.start("w")
        tools_for_tests.open_gate(gate_name)

        assert engine.wait(old, 30).output == {"g": {"gate": gate_name}, "v": {"v": 1}}
        assert engine.wait(new, 30).output == {"g": {"gate": gate_name}, "v": {"v": 2}}

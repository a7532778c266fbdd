"""`compozy run`: a workflow executed in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_support import SHARED_BACKENDS, Cli, Result, assert_one_error_line, db_flags, run_compozy

from compozy.config import load_config
from compozy.core import Status
from compozy.store import open_store
from compozy_testkit.databases import TestDatabase

FAILING = """\
id: broken
tasks:
  - id: first
    tool: echo
    with: {ok: true}
  - id: boom
    tool: fail
    with: {message: "the tool gave up"}
  - id: never
    tool: echo
"""
WITH_USER_TOOL = """\
id: counted
tasks:
  - id: count
    tool: "project_tools:count_words"
    with: {text: "{{ input.text }}"}
outputs:
  words: "{{ tasks.count.output.words }}"
"""
USER_TOOLS = """\
def count_words(text):
    return {"words": len(text.split())}
"""


def _project(root: Path, workflows: dict[str, str], database: list[str] | None = None) -> Path:
    """A project folder with a compozy.yaml and some workflow files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "workflows").mkdir(exist_ok=True)
    for name, text in workflows.items():
        (root / "workflows" / f"{name}.yaml").write_text(text)
    db = "database: {driver: sqlite, path: state.db}\n" if database is None else ""
    (root / "compozy.yaml").write_text(db + "workflows: [workflows/*.yaml]\n")
    return root / "compozy.yaml"


def test_init_then_run_hello_succeeds_with_output_and_tree(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("init", str(tmp_path / "demo")).code == 0
    monkeypatch.chdir(tmp_path / "demo")

    result = cli("run", "hello", "--input", json.dumps({"name": "Ada"}))

    assert result.code == 0, result.err
    assert "status:    SUCCESS" in result.out
    assert '"greeting": "Hello, Ada!"' in result.out
    assert '"shouted": "HELLO, ADA!"' in result.out
    tree = result.out.split("tasks:\n", 1)[1].splitlines()
    assert tree == [
        "  greet [basic] SUCCESS",
        "  together [parallel] SUCCESS",
        "    shout [basic] SUCCESS",
        "    echo [basic] SUCCESS",
    ] or tree == [
        "  greet [basic] SUCCESS",
        "  together [parallel] SUCCESS",
        "    echo [basic] SUCCESS",
        "    shout [basic] SUCCESS",
    ]
    assert "RUNNING   shout (in together)" in result.err
    with open_store(load_config("compozy.yaml").database) as store:
        [state] = store.workflows.list_states()
        assert state.status is Status.SUCCESS
        assert state.output == {"greeting": "Hello, Ada!", "shouted": "HELLO, ADA!"}


def test_a_failing_workflow_exits_1_and_shows_the_error(cli: Cli, tmp_path: Path) -> None:
    config = _project(tmp_path / "p", {"broken": FAILING})

    result = cli("run", "broken", "--config", str(config))

    assert result.code == 1
    assert "status:    FAILED" in result.out
    assert "the tool gave up" in result.out
    assert "never" not in result.out.split("tasks:", 1)[1]


def test_a_user_tool_next_to_the_config_is_found(cli: Cli, tmp_path: Path) -> None:
    config = _project(tmp_path / "p", {"counted": WITH_USER_TOOL})
    (tmp_path / "p" / "project_tools.py").write_text(USER_TOOLS)

    result = cli("run", "counted", "--config", str(config), "--input", '{"text": "a b c"}')

    assert result.code == 0, result.err
    assert '"words": 3' in result.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "no workflow definition with id 'nope'"),
        (["run", "broken", "--input", "{not json"], "--input is not valid JSON"),
        (["run", "broken", "--input", "[1]"], "--input must be a JSON object"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    config = _project(tmp_path / "p", {"broken": FAILING})

    result = cli(*args, "--config", str(config))

    assert message in assert_one_error_line(result)


def test_input_that_breaks_the_schema_stores_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init", str(tmp_path / "demo"))
    monkeypatch.chdir(tmp_path / "demo")

    result = cli("run", "hello", "--input", '{"name": 7}')

    assert "input.name" in assert_one_error_line(result)
    with open_store(load_config("compozy.yaml").database) as store:
        assert store.workflows.list_states() == []


@SHARED_BACKENDS
def test_run_uses_the_database_the_flags_name(
    cli: Cli, tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    config = _project(tmp_path / "p", {"broken": FAILING}, database=[])
    (tmp_path / "p" / "workflows" / "ok.yaml").write_text(
        textwrap.dedent(
            """\
            id: ok
            tasks:
              - {id: only, tool: echo, with: {n: 1}}
            """
        )
    )

    result = cli("run", "ok", "--config", str(config), *db_flags(compozy_empty_database))

    assert result.code == 0, result.err
    store = compozy_empty_database.open()
    [state] = store.workflows.list_states()
    assert (state.workflow_id, state.status) == ("ok", Status.SUCCESS)
    assert state.tasks["only"].output == {"n": 1}


ECHO_NAME = """\
id: named
tasks:
  - {id: say, tool: format, with: {template: "{{ input.name }}"}}
outputs:
  said: "{{ tasks.say.output.text }}"
"""


def _compozy(config: Path, *args: str, stdin: int | None = None) -> Result:
    """`compozy ARGS --config CONFIG` in a child process, with no DB_* variables."""
    return run_compozy(*args, "--config", str(config), stdin=stdin)


def test_input_is_read_from_a_file_with_at(tmp_path: Path) -> None:
    config = _project(tmp_path / "p", {"named": ECHO_NAME})
    (tmp_path / "input.json").write_text('{"name": "from a file"}')

    result = _compozy(config, "run", "named", "--input", f"@{tmp_path / 'input.json'}")

    assert result.code == 0, result.err
    assert '"said": "from a file"' in result.out


def test_input_is_read_from_stdin_with_a_dash(tmp_path: Path) -> None:
    config = _project(tmp_path / "p", {"named": ECHO_NAME})

    piped = tmp_path / "stdin.json"
    piped.write_text('{"name": "piped"}\n')

    with piped.open() as stdin:
        result = _compozy(config, "run", "named", "--input", "-", stdin=stdin.fileno())

    assert result.code == 0, result.err
    assert '"said": "piped"' in result.out


@pytest.mark.parametrize(
    ("value", "content", "message"),
    [
        ("@missing.json", None, "--input @missing.json: there is no file missing.json"),
        ("@.", None, "is a directory, not a JSON file"),
        ("@bad.json", "{nope", "the --input read from bad.json is not valid JSON"),
        ("@list.json", "[1, 2]", "the --input read from list.json must be a JSON object"),
        ("@deep.json", "[" * 5000 + "]" * 5000, "is nested too deeply"),
        ("-", "", "the --input read from stdin is not valid JSON"),
    ],
)
def test_bad_input_files_are_one_error_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    content: str | None,
    message: str,
) -> None:
    config = _project(tmp_path / "p", {"named": ECHO_NAME})
    monkeypatch.chdir(tmp_path)
    if value.startswith("@") and content is not None:
        (tmp_path / value[1:]).write_text(content)
    monkeypatch.setattr(sys, "stdin", io.StringIO(content or ""))

    result = cli("run", "named", "--config", str(config), "--input", value)

    assert message in assert_one_error_line(result)
    with open_store(load_config(config).database) as store:
        assert store.workflows.list_states() == []


def test_a_reader_that_stops_reading_ends_the_run_with_its_exit_code(tmp_path: Path) -> None:
    """`compozy run ... | head -1`: no BrokenPipeError traceback, exit 0 on SUCCESS, 1 on
    FAILED, even though stdout was closed before anything was printed."""
    config = _project(tmp_path / "p", {"named": ECHO_NAME, "broken": FAILING})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    ada = ["--input", '{"name": "Ada"}']
    for workflow, expected in (("named", 0), ("broken", 1)):
        process = subprocess.Popen(
            [sys.executable, "-m", "compozy", "run", workflow, "--config", str(config), *ada],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        process.stdout.close()  # before the first line: every write to stdout fails
        _, err = process.communicate(timeout=120)
        assert process.returncode == expected, err
        assert "Traceback" not in err
        assert "BrokenPipe" not in err
        assert f"running {workflow}" in err  # stderr (progress) still works

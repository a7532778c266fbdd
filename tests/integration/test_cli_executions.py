"""`compozy executions list|show|cancel`, run in-process against a real database.

Each scenario seeds a store and runs the CLI with flags naming the same database. Every one runs
on a SQLite file of its own, and on the shared backends (a SQLite file of the testkit and
PostgreSQL) like the other CLI tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import SHARED_BACKENDS, Cli, Result, assert_one_error_line, db_flags

from compozy.config import DatabaseConfig
from compozy.core import Component, ExecutionType, Status
from compozy.store import Store, open_store
from compozy.task import TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.databases import TestDatabase

T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
HEADER = ["ID", "WORKFLOW", "STATUS", "TASKS", "WORKER", "CREATED"]
CURSOR_HINT = "more: run again with --cursor "


def _execution(store: Store, workflow_id: str, status: Status, seconds: int) -> WorkflowState:
    return store.workflows.upsert_state(
        WorkflowState(
            workflow_id=workflow_id,
            status=status,
            input={"n": seconds},
            created_at=T0 + timedelta(seconds=seconds),
        )
    )


def _task(
    store: Store,
    state: WorkflowState,
    task_id: str,
    status: Status,
    parent: TaskState | None = None,
    seconds: int = 0,
) -> TaskState:
    return store.tasks.upsert_state(
        TaskState(
            task_id=task_id,
            workflow_id=state.workflow_id,
            workflow_exec_id=state.workflow_exec_id,
            parent_state_id=parent.task_exec_id if parent is not None else None,
            component=Component.TASK,
            status=status,
            execution_type=ExecutionType.BASIC if parent else ExecutionType.PARALLEL,
            created_at=T0 + timedelta(seconds=seconds),
        )
    )


def _rows(result: Result) -> list[list[str]]:
    """The table's rows (header checked and dropped), each split into its columns."""
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == HEADER
    return [line.split(None, 5) for line in lines[1:]]


def _next_cursor(result: Result) -> str | None:
    hints = [line for line in result.err_lines if line.startswith(CURSOR_HINT)]
    assert len(hints) <= 1, result.err
    return hints[0].removeprefix(CURSOR_HINT) if hints else None


# --- scenarios: each gets the CLI, a store and the flags that name its database -----------------

Scenario = Callable[[Cli, Store, list[str]], None]


def list_follows_cursors_through_every_execution(cli: Cli, store: Store, flags: list[str]) -> None:
    states = [_execution(store, "alpha", Status.PENDING, i // 2) for i in range(7)]
    expected = [s.workflow_exec_id for s in store.workflows.list_states()]
    assert sorted(expected) == sorted(s.workflow_exec_id for s in states)

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        args = ["executions", "list", "--limit", "3", *flags]
        result = cli(*args, *(["--cursor", cursor] if cursor else []))
        rows = _rows(result)
        sizes.append(len(rows))
        seen.extend(row[0] for row in rows)
        cursor = _next_cursor(result)
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == expected


def list_shows_status_tasks_and_worker(cli: Cli, store: Store, flags: list[str]) -> None:
    claimed = _execution(store, "alpha", Status.PENDING, 0)
    [claim] = store.queue.claim("worker-1", limit=1, lease=30)
    assert claim.workflow_exec_id == claimed.workflow_exec_id
    finished = _execution(store, "beta", Status.SUCCESS, 1)
    root = _task(store, finished, "root", Status.SUCCESS)
    _task(store, finished, "leaf", Status.SUCCESS, parent=root)

    result = cli("executions", "list", *flags)

    assert _rows(result) == [
        [finished.workflow_exec_id, "beta", "SUCCESS", "2", "-", "2024-05-01T12:00:01.250000Z"],
        [
            claimed.workflow_exec_id,
            "alpha",
            "RUNNING",
            "0",
            "worker-1",
            "2024-05-01T12:00:00.250000Z",
        ],
    ]
    assert _next_cursor(result) is None


def list_filters_and_prints_the_api_page_as_json(cli: Cli, store: Store, flags: list[str]) -> None:
    for i, (workflow_id, status) in enumerate(
        [("alpha", Status.PENDING), ("alpha", Status.FAILED), ("beta", Status.PENDING)]
    ):
        _execution(store, workflow_id, status, i)

    result = cli(
        "executions", "list", "--status", "pending", "--workflow", "alpha", "--json", *flags
    )

    assert result.code == 0, result.err
    page = json.loads(result.out)
    assert set(page) == {"items", "next_cursor"}
    assert page["next_cursor"] is None
    [item] = page["items"]
    assert (item["workflow_id"], item["status"]) == ("alpha", "PENDING")
    assert item["input"] == {"n": 0}
    assert (item["worker_id"], item["claim_count"], item["cancel_requested"]) == (None, 0, False)
    assert item["created_at"] == "2024-05-01T12:00:00.250000Z"


def list_of_nothing_says_so_on_stderr(cli: Cli, store: Store, flags: list[str]) -> None:
    result = cli("executions", "list", *flags)

    assert result.code == 0, result.err
    assert result.out == ""
    assert "no executions" in result.error_lines


def list_refuses_a_bad_cursor_or_limit(cli: Cli, store: Store, flags: list[str]) -> None:
    _execution(store, "alpha", Status.PENDING, 0)

    bad_cursor = cli("executions", "list", "--cursor", "not-a-cursor", *flags)
    assert "cursor" in assert_one_error_line(bad_cursor)
    assert bad_cursor.out == ""
    for limit in ("0", "501", "many"):
        bad_limit = cli("executions", "list", "--limit", limit, *flags)
        assert "--limit" in assert_one_error_line(bad_limit)
    bad_status = cli("executions", "list", "--status", "DONE", *flags)
    assert "--status" in assert_one_error_line(bad_status)


def show_prints_the_execution_and_its_task_tree(cli: Cli, store: Store, flags: list[str]) -> None:
    state = _execution(store, "alpha", Status.RUNNING, 0)
    root = _task(store, state, "together", Status.RUNNING, seconds=1)
    _task(store, state, "first", Status.SUCCESS, parent=root, seconds=2)
    second = _task(store, state, "second", Status.RUNNING, parent=root, seconds=3)
    _task(store, state, "deep", Status.PENDING, parent=second, seconds=4)
    _task(store, state, "after", Status.PENDING, seconds=5)

    result = cli("executions", "show", state.workflow_exec_id, *flags)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:3] == [
        f"execution: {state.workflow_exec_id}",
        "workflow:  alpha",
        "status:    RUNNING",
    ]
    assert "worker:    none" in lines
    assert lines[lines.index("tasks:") :] == [
        "tasks:",
        "  together [parallel] RUNNING",
        "    first [basic] SUCCESS",
        "    second [basic] RUNNING",
        "      deep [basic] PENDING",
        "  after [parallel] PENDING",
    ]

    as_json = cli("executions", "show", state.workflow_exec_id, "--json", *flags)
    assert as_json.code == 0, as_json.err
    detail = json.loads(as_json.out)
    assert detail["workflow_exec_id"] == state.workflow_exec_id
    assert detail["task_count"] == 5
    assert [t["task_id"] for t in detail["tasks"]] == ["together", "after"]
    assert [c["task_id"] for c in detail["tasks"][0]["children"]] == ["first", "second"]


def show_of_an_unknown_execution_fails_in_one_line(
    cli: Cli, store: Store, flags: list[str]
) -> None:
    result = cli("executions", "show", "no-such-exec", *flags)

    assert "no-such-exec" in assert_one_error_line(result)
    assert result.out == ""


def cancel_ends_a_pending_execution_at_once(cli: Cli, store: Store, flags: list[str]) -> None:
    state = _execution(store, "alpha", Status.PENDING, 0)
    task = _task(store, state, "waiting", Status.PENDING)

    result = cli("executions", "cancel", state.workflow_exec_id, *flags)

    assert result.code == 0, result.err
    assert f"execution: {state.workflow_exec_id}" in result.out
    assert "status:    CANCELED" in result.out.splitlines()
    assert store.workflows.get_state(state.workflow_exec_id).status is Status.CANCELED
    assert store.tasks.get_state(task.task_exec_id).status is Status.CANCELED


def cancel_marks_a_running_execution_for_its_worker(
    cli: Cli, store: Store, flags: list[str]
) -> None:
    state = _execution(store, "alpha", Status.PENDING, 0)
    claims = store.queue.claim("w1", limit=1, lease=30)

    result = cli("executions", "cancel", state.workflow_exec_id, "--json", *flags)

    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert (body["status"], body["cancel_requested"], body["worker_id"]) == ("RUNNING", True, "w1")
    assert any("worker w1" in line for line in result.error_lines)
    assert store.queue.renew(claims, lease=30).cancel_requested == {state.workflow_exec_id}
    text = cli("executions", "show", state.workflow_exec_id, *flags)
    assert "status:    RUNNING (canceling)" in text.out.splitlines()


def cancel_of_a_finished_execution_fails_in_one_line(
    cli: Cli, store: Store, flags: list[str]
) -> None:
    state = _execution(store, "alpha", Status.SUCCESS, 0)

    result = cli("executions", "cancel", state.workflow_exec_id, *flags)

    message = assert_one_error_line(result)
    assert state.workflow_exec_id in message
    assert "SUCCESS" in message
    assert result.out == ""
    assert store.workflows.get_state(state.workflow_exec_id).status is Status.SUCCESS
    unknown = cli("executions", "cancel", "no-such-exec", *flags)
    assert "no-such-exec" in assert_one_error_line(unknown)


SCENARIOS: list[Scenario] = [
    list_follows_cursors_through_every_execution,
    list_shows_status_tasks_and_worker,
    list_filters_and_prints_the_api_page_as_json,
    list_of_nothing_says_so_on_stderr,
    list_refuses_a_bad_cursor_or_limit,
    show_prints_the_execution_and_its_task_tree,
    show_of_an_unknown_execution_fails_in_one_line,
    cancel_ends_a_pending_execution_at_once,
    cancel_marks_a_running_execution_for_its_worker,
    cancel_of_a_finished_execution_fails_in_one_line,
]
_IDS = [scenario.__name__ for scenario in SCENARIOS]


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Store, list[str]]]:
    """A migrated SQLite file of this test's own, a store on it and the flags naming it."""
    path = tmp_path / "state.db"
    store = open_store(DatabaseConfig(driver="sqlite", path=str(path)))
    try:
        yield store, ["--db-driver", "sqlite", "--db-path", str(path)]
    finally:
        store.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=_IDS)
def test_on_a_sqlite_file(
    cli: Cli, sqlite_file: tuple[Store, list[str]], scenario: Scenario
) -> None:
    store, flags = sqlite_file
    scenario(cli, store, flags)


@SHARED_BACKENDS
@pytest.mark.parametrize("scenario", SCENARIOS, ids=_IDS)
def test_on_the_shared_backends(
    cli: Cli, compozy_database: TestDatabase, compozy_store: Store, scenario: Scenario
) -> None:
    scenario(cli, compozy_store, db_flags(compozy_database))


# --- the database flags -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["show", "x"], ["cancel", "x"]])
def test_a_missing_sqlite_file_is_refused_not_created(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    database = tmp_path / "missing.db"

    result = cli("executions", *command, "--db-driver", "sqlite", "--db-path", str(database))

    assert "no SQLite database" in assert_one_error_line(result)
    assert not database.exists()


def test_the_config_file_names_the_database(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("init", str(tmp_path / "demo")).code == 0
    monkeypatch.chdir(tmp_path / "demo")
    with open_store(DatabaseConfig(driver="sqlite", path=".compozy/compozy.db")) as store:
        state = _execution(store, "hello", Status.PENDING, 0)

    listed = cli("executions", "list")
    canceled = cli("executions", "cancel", state.workflow_exec_id, "--config", "compozy.yaml")

    assert [row[0] for row in _rows(listed)] == [state.workflow_exec_id]
    assert canceled.code == 0, canceled.err
    assert "status:    CANCELED" in canceled.out.splitlines()


def test_an_unreachable_database_fails_in_one_line(cli: Cli) -> None:
    url = "postgresql://u:SuperSecret123@127.0.0.1:1/x"

    result = cli("executions", "list", "--db-driver", "postgres", "--db-conn-string", url)

    assert "cannot reach" in assert_one_error_line(result)
    assert "SuperSecret123" not in result.out + result.err


@pytest.mark.parametrize(
    "args", [["executions", "--help"], ["executions", "list", "-h"], ["executions", "cancel", "-h"]]
)
def test_help_exits_0(cli: Cli, args: list[str]) -> None:
    result = cli(*args)

    assert result.code == 0
    assert "Usage" in result.out

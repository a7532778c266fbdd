"""`compozy export`, `compozy import` and `compozy backup`: the commands, their files and every
bad input (exit 2, one line naming the line and table, the target untouched)."""

from __future__ import annotations

import gzip
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import SHARED_BACKENDS, Cli, assert_one_error_line, db_flags

from compozy.auth import Role, User
from compozy.config import load_config
from compozy.store import migrations, open_store, sql_connection
from compozy.store.tables import task_states
from compozy_testkit.contract._build import task, workflow
from compozy_testkit.contract.transfer import build_project, project_reads
from compozy_testkit.databases import TestDatabase

REVISIONS = migrations.revisions()
Lines = list[str]


def export_lines(cli: Cli, database: TestDatabase, path: Path) -> Lines:
    result = cli("export", "--output", str(path), *db_flags(database))
    assert result.code == 0, result.err
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: Lines) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def state_of(database: TestDatabase) -> tuple[str | None, object]:
    """The target's schema revision and everything its repositories read."""
    store = database.open()
    try:
        revision = store.health().revision
        return revision, project_reads(store) if revision == REVISIONS[-1] else None
    finally:
        store.close()


@pytest.fixture
def exported(cli: Cli, compozy_database: TestDatabase, tmp_path: Path) -> Lines:
    """A small project on the test's backend, exported."""
    build_project(compozy_database.store(), executions=2)
    return export_lines(cli, compozy_database, tmp_path / "project.jsonl")


def _index(lines: Lines, table: str, nth: int = 0) -> int:
    found = [i for i, line in enumerate(lines) if f'"table":"{table}"' in line]
    return found[nth]


def _edit(table: str, column: str, value: object, nth: int = 0) -> Callable[[Lines], Lines]:
    def edit(lines: Lines) -> Lines:
        i = _index(lines, table, nth)
        record = json.loads(lines[i])
        record["row"][column] = value
        return [*lines[:i], json.dumps(record, ensure_ascii=False), *lines[i + 1 :]]

    return edit


def _header(key: str, value: object) -> Callable[[Lines], Lines]:
    def edit(lines: Lines) -> Lines:
        header = json.loads(lines[0])
        header[key] = value
        return [json.dumps(header), *lines[1:]]

    return edit


def _duplicate(table: str) -> Callable[[Lines], Lines]:
    def edit(lines: Lines) -> Lines:
        i = _index(lines, table)
        return [*lines[: i + 1], lines[i], *lines[i + 1 :]]

    return edit


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def _same_email_twice(lines: Lines) -> Lines:
    """A second user, of a new id, with the first user's email."""
    i = _index(lines, "users")
    record = json.loads(lines[i])
    record["row"]["id"] = "0" * 27
    return [*lines[: i + 1], json.dumps(record, ensure_ascii=False), *lines[i + 1 :]]


def _child_first(lines: Lines) -> Lines:
    rows = [i for i, line in enumerate(lines) if '"table":"task_states"' in line]
    first, last = rows[0], rows[-1]
    return [*lines[:first], lines[last], *lines[first:last], *lines[last + 1 :]]


# Each damage, and what the one error line must say (a regular expression).
DAMAGES: dict[str, tuple[Callable[[Lines], Lines], str]] = {
    "truncated": (lambda lines: lines[:-3], r"ends after line \d+ without its trailer"),
    "cut mid-line": (
        lambda lines: [*lines[:-2], lines[-2][: len(lines[-2]) // 2]],
        r"line \d+: not a JSON object",
    ),
    "edited row": (
        _edit("users", "email", "mallory@example.com"),
        r"line \d+ \(trailer, users\): the checksum does not match",
    ),
    "row removed": (
        lambda lines: [line for i, line in enumerate(lines) if i != _index(lines, "api_keys")],
        r"line \d+ \(trailer, api_keys\): the trailer says 2 rows but the file holds 1",
    ),
    "format version": (
        _header("format_version", 99),
        r"line 1 \(header\): format version 99.*upgrade compozy",
    ),
    "newer revision": (
        _header("schema_revision", "9999"),
        r"line 1 \(header\): the export is at schema revision '9999', which this compozy",
    ),
    "dangling parent": (
        _edit("task_states", "parent_state_id", "no-such-task", nth=4),
        r"line \d+ \(task_states\): parent_state_id 'no-such-task' names a task_states row that is "
        "not in the file before this line",
    ),
    "child before parent": (
        _child_first,
        r"line \d+ \(task_states\): parent_state_id '\w+' names a task_states row that is not in",
    ),
    "dangling workflow": (
        _edit("task_states", "workflow_exec_id", "no-such-execution"),
        r"line \d+ \(task_states\): workflow_exec_id 'no-such-execution' names a "
        "workflow_states row",
    ),
    "dangling owner": (
        _edit("api_keys", "user_id", "nobody"),
        r"line \d+ \(api_keys\): user_id 'nobody' names a users row",
    ),
    "duplicate id": (
        _duplicate("users"),
        r"line \d+ \(users\): id '\w+' is already taken by an earlier row",
    ),
    "duplicate email": (
        _same_email_twice,
        r"line \d+ \(users\): email_key '[^']+@example.com' is already taken by an earlier "
        r"row \(uq_users_email_key\)",
    ),
    "boolean for a number": (
        _edit("workflow_states", "claim_count", True),
        r"line \d+ \(workflow_states\): claim_count is a boolean; it must be a whole number",
    ),
    "number for a string": (
        _edit("users", "email", 12),
        r"line \d+ \(users\): email is a number; it must be a string",
    ),
    "naive timestamp": (
        _edit("task_states", "created_at", "2026-01-01T12:00:00"),
        r"line \d+ \(task_states\): created_at: timestamp '2026-01-01T12:00:00' is not in",
    ),
    "null in a required column": (
        _edit("workflow_states", "status", None),
        r"line \d+ \(workflow_states\): status is null; it needs a value",
    ),
    "refused by a CHECK": (
        _edit("workflow_states", "status", "DONE"),
        r"line \d+ \(workflow_states\): the target refused the row: .*ck_workflow_states_status",
    ),
    "unknown column": (
        _edit("users", "nickname", "bob"),
        r"line \d+ \(users\): the row's columns do not match the table \(unknown nickname\)",
    ),
    "unknown table": (
        lambda lines: [*lines[:1], '{"row":{},"table":"secrets"}', *lines[1:]],
        r"line 2: table 'secrets' is not one of users, api_keys, workflow_states, task_states",
    ),
    "U+0000 in a JSON value": (
        _edit("workflow_states", "input", {"x": "a\u0000b"}),
        r"line \d+ \(workflow_states\): input.x contains the character U\+0000",
    ),
    "JSON nested too deep": (
        _edit("workflow_states", "input", _nested(70)),
        r"line \d+ \(workflow_states\): input is nested too deeply",
    ),
    "a number out of the column's range": (
        _edit("workflow_states", "claim_count", 10**20),
        r"line \d+ \(workflow_states\): claim_count is 100000000000000000000, outside the",
    ),
    "a line nested past what JSON can parse": (
        lambda lines: [lines[0], "[" * 200_000 + "]" * 200_000, *lines[1:]],
        r"line 2: nested too deeply to be a row of an export",
    ),
    "a lone surrogate": (
        lambda lines: [
            line.replace('"email":"', '"email":"\\ud800', 1) if '"table":"users"' in line else line
            for line in lines
        ],
        r"line \d+ \(users\): email contains a lone surrogate",
    ),
    "lines after the trailer": (
        lambda lines: [*lines, lines[1]],
        r"line \d+: more lines follow the trailer",
    ),
    "not an export": (
        lambda lines: ['{"hello": "world"}'],
        r"line 1 \(header\): not a compozy export",
    ),
}


def _broken_files(tmp_path: Path, lines: Lines) -> dict[str, tuple[Path, str]]:
    """Files that are broken below the JSON level."""
    good = "\n".join(lines).encode("utf-8") + b"\n"
    utf8 = tmp_path / "bad-utf8.jsonl"
    second = good.index(b"\n") + 1
    utf8.write_bytes(good[: second + 10] + b"\xff\xfe" + good[second + 12 :])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    fake_gz = tmp_path / "plain.jsonl.gz"
    fake_gz.write_bytes(good)
    damaged_gz = tmp_path / "damaged.jsonl.gz"
    zipped = gzip.compress(good)
    damaged_gz.write_bytes(zipped[: len(zipped) * 2 // 3])
    return {
        "invalid UTF-8": (utf8, r"line 2: not valid UTF-8"),
        "empty file": (empty, r"the input is empty"),
        "gzip that is not one": (fake_gz, r"plain\.jsonl\.gz ends in \.gz but is not a gzip file"),
        "damaged gzip": (damaged_gz, r"line \d+: the gzip stream is damaged or cut short"),
    }


@SHARED_BACKENDS
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_export_is_refused_with_its_line_and_the_empty_target_stays_untouched(
    cli: Cli, exported: Lines, compozy_empty_database: TestDatabase, tmp_path: Path, damage: str
) -> None:
    change, message = DAMAGES[damage]
    path = write_lines(tmp_path / "damaged.jsonl", change(exported))
    result = cli("import", str(path), *db_flags(compozy_empty_database))
    line = assert_one_error_line(result)
    assert re.search(message, line), line
    assert state_of(compozy_empty_database) == (None, None)  # not even migrated


@SHARED_BACKENDS
@pytest.mark.parametrize(
    "damage", ["edited row", "dangling parent", "duplicate id", "damaged gzip"]
)
def test_a_refused_replace_keeps_every_row_of_the_target(
    cli: Cli, exported: Lines, compozy_database: TestDatabase, tmp_path: Path, damage: str
) -> None:
    # The source's own database is the target: --replace would delete all of it first.
    before = state_of(compozy_database)
    files = _broken_files(tmp_path, exported)
    if damage in files:
        path = files[damage][0]
    else:
        path = write_lines(tmp_path / "damaged.jsonl", DAMAGES[damage][0](exported))
    result = cli("import", "--replace", str(path), *db_flags(compozy_database))
    assert_one_error_line(result)
    assert state_of(compozy_database) == before


@SHARED_BACKENDS
def test_broken_files_are_refused_with_one_line(
    cli: Cli, exported: Lines, compozy_empty_database: TestDatabase, tmp_path: Path
) -> None:
    for name, (path, message) in _broken_files(tmp_path, exported).items():
        result = cli("import", str(path), *db_flags(compozy_empty_database))
        line = assert_one_error_line(result)
        assert re.search(message, line), (name, line)
        assert state_of(compozy_empty_database) == (None, None), name


# --- what works ------------------------------------------------------------------------------


@SHARED_BACKENDS
def test_export_to_a_gz_file_is_private_and_imports_into_an_empty_database(
    cli: Cli, compozy_database: TestDatabase, compozy_empty_database: TestDatabase, tmp_path: Path
) -> None:
    build_project(compozy_database.store(), executions=2)
    path = tmp_path / "out" / "project.jsonl.gz"
    path.parent.mkdir()
    result = cli("export", "-o", str(path), *db_flags(compozy_database))
    assert result.code == 0, result.err
    assert "exported 2 users, 2 api_keys, 2 workflow_states, 6 task_states" in result.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["project.jsonl.gz"]  # no partial
    assert gzip.decompress(path.read_bytes()).startswith(b'{"format":"compozy-export"')

    result = cli("import", str(path), "--progress", *db_flags(compozy_empty_database))
    assert result.code == 0, result.err
    assert "imported 2 users, 2 api_keys, 2 workflow_states, 6 task_states" in result.out
    assert "import task_states 6/6 100%" in result.err
    assert state_of(compozy_empty_database) == state_of(compozy_database)


def test_export_piped_into_import_between_two_config_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            f"database:\n  driver: sqlite\n  path: {tmp_path / name}.db\n"
        )
    with open_store(load_config(tmp_path / "a.yaml").database) as source:
        build_project(source, executions=3)
        expected = project_reads(source)
    compozy = f"{sys.executable} -m compozy.cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    piped = subprocess.run(
        f"{compozy} export --config a.yaml | {compozy} import --config b.yaml",
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "imported 2 users, 2 api_keys, 3 workflow_states, 9 task_states" in piped.stdout
    with open_store(load_config(tmp_path / "b.yaml").database) as copied:
        assert project_reads(copied) == expected


@SHARED_BACKENDS
def test_a_dry_run_reports_and_writes_nothing(
    cli: Cli, exported: Lines, compozy_empty_database: TestDatabase, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "project.jsonl", exported)
    result = cli("import", "--dry-run", str(path), *db_flags(compozy_empty_database))
    assert result.code == 0, result.err
    assert (
        "dry run: the export is whole and 2 users, 2 api_keys, 2 workflow_states, "
        "6 task_states would import" in result.out
    )
    assert "nothing was written" in result.out
    assert state_of(compozy_empty_database) == (None, None)


@SHARED_BACKENDS
def test_a_dry_run_into_a_missing_sqlite_file_does_not_create_it(
    cli: Cli, compozy_database: TestDatabase, tmp_path: Path
) -> None:
    build_project(compozy_database.store(), executions=1)
    lines = export_lines(cli, compozy_database, tmp_path / "p.jsonl")
    path = write_lines(tmp_path / "p.jsonl", lines)
    missing = tmp_path / "never.db"
    result = cli(
        "import", "--dry-run", str(path), "--db-driver", "sqlite", "--db-path", str(missing)
    )
    assert result.code == 0, result.err
    assert not missing.exists()


@SHARED_BACKENDS
def test_a_target_with_rows_is_refused_and_replace_swaps_them(
    cli: Cli, exported: Lines, compozy_empty_database: TestDatabase, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "project.jsonl", exported)
    flags = db_flags(compozy_empty_database)
    assert cli("import", str(path), *flags).code == 0
    imported = state_of(compozy_empty_database)
    with compozy_empty_database.open() as store:
        store.auth.create_user(User(email="extra@example.com"))
    line = assert_one_error_line(cli("import", str(path), *flags))
    assert "already holds rows (users: 3, api_keys: 2, workflow_states: 2, task_states: 6)" in line
    assert "pass --replace" in line
    assert cli("import", "--replace", str(path), *flags).code == 0
    assert state_of(compozy_empty_database) == imported


def _export_at(cli: Cli, database: TestDatabase, revision: str, path: Path) -> Lines:
    """An export of a database left at an older schema revision, holding one user."""
    with database.open() as store:
        migrations.upgrade(store, revision)
        store.auth.create_user(User(email="old@example.com", role=Role.ADMIN))
    return export_lines(cli, database, path)


@SHARED_BACKENDS
def test_an_empty_target_is_moved_to_the_exports_revision(
    cli: Cli,
    compozy_empty_database: TestDatabase,
    compozy_empty_database_on: Callable[[str], TestDatabase],
    tmp_path: Path,
) -> None:
    older = REVISIONS[-2]
    lines = _export_at(cli, compozy_empty_database, older, tmp_path / "old.jsonl")
    assert json.loads(lines[0])["schema_revision"] == older
    for prepared in (None, REVISIONS[-1]):  # no schema at all; the head, newer than the export
        target = compozy_empty_database_on(compozy_empty_database.backend)
        if prepared is not None:
            with target.open() as store:
                migrations.upgrade(store, prepared)
        result = cli("import", str(tmp_path / "old.jsonl"), *db_flags(target))
        assert result.code == 0, result.err
        with target.open() as store:
            assert store.health().revision == older
            migrations.upgrade(store)
            assert [u.email for u in store.auth.list_users()] == ["old@example.com"]


@SHARED_BACKENDS
def test_replace_needs_the_exports_revision_and_says_which_side_to_upgrade(
    cli: Cli,
    compozy_database: TestDatabase,
    compozy_empty_database: TestDatabase,
    tmp_path: Path,
) -> None:
    old = write_lines(
        tmp_path / "old.jsonl",
        _export_at(cli, compozy_empty_database, REVISIONS[-2], tmp_path / "old.jsonl"),
    )
    workflow(compozy_database.store())
    before = state_of(compozy_database)
    line = assert_one_error_line(cli("import", "--replace", str(old), *db_flags(compozy_database)))
    assert f"is at schema revision {REVISIONS[-1]}, newer than the export's {REVISIONS[-2]}" in line
    assert (
        "upgrade the source (`compozy migrate up` with the source's config) and export again"
        in line
    )
    assert state_of(compozy_database) == before

    new = write_lines(
        tmp_path / "new.jsonl", export_lines(cli, compozy_database, tmp_path / "new.jsonl")
    )
    line = assert_one_error_line(
        cli("import", "--replace", str(new), *db_flags(compozy_empty_database))
    )
    assert (
        f"at schema revision {REVISIONS[-2]} and the export at {REVISIONS[-1]}: upgrade the target"
        in line
    )


def test_an_export_of_a_database_without_schema_is_refused(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    line = assert_one_error_line(cli("export", "--db-driver", "sqlite", "--db-path", str(empty)))
    assert "has no compozy schema, so there is nothing to export" in line
    line = assert_one_error_line(
        cli("export", "--db-driver", "sqlite", "--db-path", str(tmp_path / "none.db"))
    )
    assert "there is no SQLite database at" in line
    assert not (tmp_path / "none.db").exists()


# --- backup ----------------------------------------------------------------------------------


@pytest.mark.compozy_backends("sqlite-file", reason="backup copies a SQLite file")
def test_backup_copies_a_sqlite_file_while_another_process_writes(
    cli: Cli, compozy_database: TestDatabase, tmp_path: Path
) -> None:
    store = compozy_database.store()
    build_project(store, executions=2)
    expected = project_reads(store)
    path = Path(str(compozy_database.config.path if compozy_database.config else ""))
    stop = threading.Event()

    def write() -> None:  # another connection keeps committing while the backup runs
        with sqlite3.connect(path, timeout=30) as other:
            n = 0
            while not stop.is_set():
                other.execute("UPDATE users SET email = email WHERE rowid = ?", (n % 2 + 1,))
                other.commit()
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        dest = tmp_path / "backup.db"
        result = cli("backup", str(dest), *db_flags(compozy_database))
    finally:
        stop.set()
        writer.join()
    assert result.code == 0, result.err
    assert f"backed up sqlite {path} to {dest}" in result.out
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    with sqlite3.connect(dest) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with open_store(
        load_config(None, overrides={"database": {"driver": "sqlite", "path": str(dest)}}).database
    ) as copy:
        assert project_reads(copy) == expected

    line = assert_one_error_line(cli("backup", str(dest), *db_flags(compozy_database)))
    assert f"{dest} exists already: choose a new name" in line
    line = assert_one_error_line(
        cli("backup", str(tmp_path / "no" / "b.db"), *db_flags(compozy_database))
    )
    assert "is not a folder: create it first" in line


@pytest.mark.compozy_backends("postgres", reason="backup refuses a server")
def test_backup_of_postgres_points_to_pg_dump_and_export(
    cli: Cli, compozy_database: TestDatabase, tmp_path: Path
) -> None:
    line = assert_one_error_line(cli("backup", str(tmp_path / "b.db"), *db_flags(compozy_database)))
    assert "use pg_dump" in line
    assert "compozy export" in line
    assert not (tmp_path / "b.db").exists()
    assert list(tmp_path.iterdir()) == []


@SHARED_BACKENDS
def test_export_never_overwrites_without_force_and_never_the_database(
    cli: Cli, compozy_database: TestDatabase, tmp_path: Path
) -> None:
    build_project(compozy_database.store(), executions=1)
    flags = db_flags(compozy_database)
    taken = tmp_path / "taken.jsonl"
    taken.write_text("keep me")
    line = assert_one_error_line(cli("export", "-o", str(taken), *flags))
    assert "exists already: choose a new name, or pass --force to replace it" in line
    assert taken.read_text() == "keep me"
    assert cli("export", "-o", str(taken), "--force", *flags).code == 0
    assert taken.read_text().startswith('{"format":"compozy-export"')
    line = assert_one_error_line(cli("export", "-o", str(tmp_path), *flags))
    assert "is a folder: give --output a file name" in line
    line = assert_one_error_line(cli("export", "-o", "", *flags))
    assert "--output is empty" in line
    if compozy_database.config is not None and compozy_database.config.sqlite_file:
        own = compozy_database.config.sqlite_file
        line = assert_one_error_line(cli("export", "-o", str(own), "--force", *flags))
        assert "is a file of the database being exported" in line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_a_refused_import_into_a_new_sqlite_file_leaves_no_file_or_folder(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "bad.jsonl", ['{"format":"nope"}'])
    target = tmp_path / "new" / "deeper" / "copy.db"
    line = assert_one_error_line(
        cli("import", str(source), "--db-driver", "sqlite", "--db-path", str(target))
    )
    assert "not a compozy export" in line
    assert not (tmp_path / "new").exists()
    line = assert_one_error_line(
        cli(
            "import",
            str(tmp_path / "missing.jsonl"),
            "--db-driver",
            "sqlite",
            "--db-path",
            str(target),
        )
    )
    assert "cannot read" in line
    assert not (tmp_path / "new").exists()


@SHARED_BACKENDS
def test_an_export_of_tasks_whose_parents_loop_is_refused_naming_them(
    cli: Cli, compozy_database: TestDatabase, tmp_path: Path
) -> None:
    store = compozy_database.store()
    wf = workflow(store)
    first = task(store, wf, "a")
    second = task(store, wf, "b", parent=first)
    with sql_connection(store, write=True) as conn:  # a loop no repository write makes
        conn.execute(
            task_states.update()
            .where(task_states.c.task_exec_id == first.task_exec_id)
            .values(parent_state_id=second.task_exec_id)
        )
    out = tmp_path / "loop.jsonl"
    line = assert_one_error_line(cli("export", "-o", str(out), *db_flags(compozy_database)))
    assert "task_states holds 2 rows whose parent_state_id chain loops back on itself" in line
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

"""The `compozy` command, run in-process: init, migrate up/down/status, and its error contract."""

from __future__ import annotations

import os
import pty
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
import yaml
from cli_support import (
    SHARED_BACKENDS,
    Cli,
    Result,
    assert_one_error_line,
    db_flags,
    run_compozy,
)

import compozy
import compozy.cli.init as cli_init
from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, fingerprint, new_api_key, verify_api_key
from compozy.config import load_config
from compozy.core import Status
from compozy.errors import StoreUnavailable
from compozy.store import Store, migrations, open_store, sql_connection
from compozy.workflow import WorkflowState
from compozy_testkit.databases import TestDatabase

KEY_PATTERN = re.compile(r"cpzy_[A-Za-z0-9]+_[A-Za-z0-9]+")
UNREACHABLE_POSTGRES = "postgresql://nobody@127.0.0.1:1/x"
REVISIONS = migrations.revisions()
HEAD = REVISIONS[-1]
CLAIM_COLUMNS_REVISION = "0003"  # worker_id, lease_expires_at, claim_count
POSTGRES_ONLY = pytest.mark.compozy_backends(
    "postgres", reason="what init writes for a PostgreSQL database"
)


def current_revision(database: TestDatabase) -> str | None:
    """The revision the database is at, read without the CLI."""
    store = database.open()
    try:
        return migrations.status(store).current
    finally:
        store.close()


def init_project(cli: Cli, directory: Path, *args: str) -> tuple[Result, str]:
    """Run `compozy init DIR` successfully; return the result and the plaintext key."""
    result = cli("init", str(directory), *args)
    assert result.code == 0, result.err
    keys = [
        key
        for line in result.out.splitlines()
        if line.startswith("api key:")
        for key in KEY_PATTERN.findall(line)
    ]
    assert len(keys) == 1, result.out
    return result, keys[0]


def open_project(directory: Path) -> Store:
    return open_store(load_config(directory / "compozy.yaml").database)


# --- init ---------------------------------------------------------------------------------------


def test_init_writes_a_sqlite_config_and_a_private_database(cli: Cli, tmp_path: Path) -> None:
    demo = tmp_path / "demo"

    init_project(cli, demo)

    settings = yaml.safe_load((demo / "compozy.yaml").read_text(encoding="utf-8"))
    assert settings == {
        "database": {"driver": "sqlite", "path": ".compozy/compozy.db"},
        "workflows": ["workflows/*.yaml"],
    }
    assert yaml.safe_load((demo / "workflows" / "hello.yaml").read_text())["id"] == "hello"
    database = demo / ".compozy" / "compozy.db"
    assert database.is_file()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_init_key_belongs_to_the_admin_and_verifies(cli: Cli, tmp_path: Path) -> None:
    demo = tmp_path / "demo"

    result, plaintext = init_project(cli, demo, "--admin-email", "Root@Example.org")

    assert "shown only this once" in result.out
    with open_project(demo) as store:
        key = store.auth.get_api_key_by_fingerprint(fingerprint(plaintext))
        assert verify_api_key(plaintext, key) is True
        admin = store.auth.get_user_by_id(key.user_id)
        assert admin.role == Role.ADMIN
        assert admin.email == "Root@Example.org"
        assert [user.id for user in store.auth.list_users()] == [admin.id]
        assert migrations.status(store).current == HEAD


def test_init_and_run_say_nothing_about_knowledge_features_nobody_asked_for(
    cli: Cli, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    result = cli("init", str(demo))
    assert result.code == 0

    ran = run_compozy("run", "hello", cwd=demo)

    assert ran.code == 0, ran.err
    assert [line for line in result.err_lines + ran.err_lines if "knowledge" in line] == []
    assert result.error_lines == []


def test_migrate_status_reads_the_init_config_from_another_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = cli("migrate", "status", "--config", "../demo/compozy.yaml")

    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"database: sqlite {demo / '.compozy' / 'compozy.db'}",
        f"current:  {HEAD} (head)",
        "pending:  none",
    ]


def test_init_twice_is_refused_and_keeps_the_first_install(cli: Cli, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    _, plaintext = init_project(cli, demo)
    config_text = (demo / "compozy.yaml").read_text(encoding="utf-8")

    result = cli("init", str(demo), "--admin-email", "second@example.org")

    assert "exists already" in assert_one_error_line(result)
    assert result.out == ""
    assert (demo / "compozy.yaml").read_text(encoding="utf-8") == config_text
    with open_project(demo) as store:
        key = store.auth.get_api_key_by_fingerprint(fingerprint(plaintext))
        assert verify_api_key(plaintext, key)
        assert [user.email for user in store.auth.list_users()] == ["admin@localhost"]


def test_init_with_a_bad_email_leaves_nothing_behind(cli: Cli, tmp_path: Path) -> None:
    demo = tmp_path / "new" / "demo"

    result = cli("init", str(demo), "--admin-email", "not-an-email")

    assert "not-an-email" in assert_one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_init_failing_after_the_database_exists_removes_everything_it_made(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me", encoding="utf-8")

    def broken_new_api_key(user_id: str) -> tuple[object, str]:
        assert (existing / ".compozy" / "compozy.db").is_file()  # the failure comes late
        raise StoreUnavailable("the disk is full; free some space")

    monkeypatch.setattr(cli_init, "new_api_key", broken_new_api_key)

    result = cli("init", str(existing))

    assert "the disk is full" in assert_one_error_line(result)
    assert KEY_PATTERN.search(result.out) is None
    assert sorted(path.name for path in existing.iterdir()) == ["notes.txt"]


def test_init_cleans_up_before_an_unexpected_error_propagates(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy_new_api_key(user_id: str) -> tuple[object, str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_init, "new_api_key", buggy_new_api_key)

    with pytest.raises(RuntimeError, match="a bug"):
        cli("init", str(tmp_path / "demo"))

    assert list(tmp_path.iterdir()) == []


def test_init_into_a_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x", encoding="utf-8")

    result = cli("init", str(target))

    assert "not a directory" in assert_one_error_line(result)
    assert target.read_text(encoding="utf-8") == "x"


# --- init with the database flags and DB_* variables --------------------------------------------


def _url(database: TestDatabase) -> str:
    assert database.config is not None
    assert database.config.conn_string is not None
    return database.config.conn_string.get_secret_value()


def _with_password(url: str) -> tuple[str, str]:
    """``url`` with a password in it (the test server trusts local connections), and that
    password."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:pw-s3cret-1@{host}")), "pw-s3cret-1"


def _written(directory: Path) -> dict[str, object]:
    settings = yaml.safe_load((directory / "compozy.yaml").read_text(encoding="utf-8"))
    assert settings["workflows"] == ["workflows/*.yaml"]
    database: dict[str, object] = settings["database"]
    return database


@SHARED_BACKENDS
def test_init_with_database_flags_writes_a_config_for_that_database(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    demo = tmp_path / "demo"

    result = run_compozy("init", str(demo), *db_flags(compozy_empty_database), cwd=tmp_path)

    assert result.code == 0, result.err
    config = compozy_empty_database.config
    assert config is not None
    if compozy_empty_database.backend == "postgres":
        expected = {"driver": "postgres", "conn_string": _url(compozy_empty_database)}
    else:  # a file outside the project is written as its absolute path
        expected = {"driver": "sqlite", "path": str(config.path)}
    assert _written(demo) == expected
    # The next command, in the project and without flags, finds the admin init made.
    users = run_compozy("users", "list", cwd=demo)
    assert users.code == 0, users.err
    assert users.out.splitlines()[1].split()[1:3] == ["admin@localhost", "admin"]


@POSTGRES_ONLY
def test_init_from_the_environment_writes_a_reference_not_the_password(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    url, password = _with_password(_url(compozy_empty_database))
    demo = tmp_path / "demo"

    result = run_compozy(
        "init", str(demo), env={"DB_DRIVER": "postgres", "DB_CONN_STRING": url}, cwd=tmp_path
    )

    assert result.code == 0, result.err
    assert _written(demo) == {"driver": "postgres", "conn_string": "${DB_CONN_STRING}"}
    assert password not in (demo / "compozy.yaml").read_text(encoding="utf-8")
    assert password not in result.out + result.err
    assert "note:     the config reads the connection string from ${DB_CONN_STRING}" in result.out
    # The driver comes from the file now: only the variable is needed.
    listed = run_compozy("users", "list", cwd=demo, env={"DB_CONN_STRING": url})
    assert "admin@localhost" in listed.out, listed.err
    unset = run_compozy("users", "list", cwd=demo)
    line = assert_one_error_line(unset)
    assert "database.conn_string from ${DB_CONN_STRING}" in line
    assert "DB_CONN_STRING is not set" in line


@POSTGRES_ONLY
def test_init_from_db_password_and_parts_refers_to_db_password(
    cli: Cli, tmp_path: Path, compozy_empty_database: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, password = _with_password(_url(compozy_empty_database))
    parts = urlsplit(url)
    environment = {
        "DB_DRIVER": "postgres",
        "DB_HOST": str(parts.hostname),
        "DB_PORT": str(parts.port or 5432),
        "DB_USER": str(parts.username),
        "DB_NAME": parts.path.lstrip("/"),
        "DB_PASSWORD": password,
    }
    for var, value in environment.items():
        monkeypatch.setenv(var, value)
    demo = tmp_path / "demo"

    init_project(cli, demo)

    assert _written(demo) == {
        "driver": "postgres",
        "host": environment["DB_HOST"],
        "port": int(environment["DB_PORT"]),
        "user": environment["DB_USER"],
        "name": environment["DB_NAME"],
        "password": "${DB_PASSWORD}",
    }
    monkeypatch.delenv("DB_DRIVER")  # from here on, the file says postgres
    status = cli("migrate", "status", "--config", str(demo / "compozy.yaml"))
    assert status.out.splitlines()[1] == f"current:  {HEAD} (head)", status.err


@POSTGRES_ONLY
def test_a_password_given_as_a_flag_is_written_to_an_owner_only_file(
    cli: Cli, tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    url, _ = _with_password(_url(compozy_empty_database))
    demo = tmp_path / "demo"

    result, _ = init_project(cli, demo, "--db-driver", "postgres", "--db-conn-string", url)

    assert _written(demo) == {"driver": "postgres", "conn_string": url}
    assert stat.S_IMODE((demo / "compozy.yaml").stat().st_mode) == 0o600
    assert "only you can read it" in result.out


@POSTGRES_ONLY
def test_init_on_a_database_that_has_an_admin_is_refused_and_leaves_nothing(
    cli: Cli, tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    flags = db_flags(compozy_empty_database)
    init_project(cli, tmp_path / "first", *flags)

    result = cli("init", str(tmp_path / "second"), *flags)

    line = assert_one_error_line(result)
    assert "has an admin already" in line
    assert "compozy keys create --user EMAIL" in line
    assert not (tmp_path / "second").exists()


def test_init_refuses_an_in_memory_database(cli: Cli, tmp_path: Path) -> None:
    result = cli("init", str(tmp_path / "demo"), "--db-driver", "sqlite", "--db-path", ":memory:")

    assert ":memory:" in assert_one_error_line(result)
    assert not (tmp_path / "demo").exists()


def test_a_config_file_names_environment_variables(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "compozy.yaml"
    config.write_text("database:\n  driver: sqlite\n  path: ${MY_DB_FILE}\n", encoding="utf-8")
    monkeypatch.setenv("MY_DB_FILE", str(tmp_path / "mine.db"))

    status = cli("migrate", "status", "--config", str(config))

    assert status.out.splitlines()[0] == f"database: sqlite {tmp_path / 'mine.db'} (no file yet)"
    config.write_text("database:\n  driver: sqlite\n  path: a$${MY_DB_FILE}\n", encoding="utf-8")
    assert load_config(config).database.path == str(tmp_path / "a${MY_DB_FILE}")


# --- migrate on both backends --------------------------------------------------------------------


@SHARED_BACKENDS
def test_status_of_an_empty_database_shows_every_revision_pending(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    result = cli("migrate", "status", *db_flags(compozy_empty_database))

    assert result.code == 0, result.err
    never_created = compozy_empty_database.backend == "sqlite-file"
    if never_created:  # status reports a missing SQLite file without creating it
        assert compozy_empty_database.config is not None
        assert not Path(str(compozy_empty_database.config.path)).exists()
    location = compozy_empty_database.open().describe()
    assert result.out.splitlines() == [
        f"database: {location}" + (" (no file yet)" if never_created else ""),
        "current:  none",
        f"pending:  {', '.join(REVISIONS)}",
    ]


@SHARED_BACKENDS
def test_migrate_walks_the_history_up_and_down(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    flags = db_flags(compozy_empty_database)
    previous = REVISIONS[-2] if len(REVISIONS) > 1 else None

    up = cli("migrate", "up", *flags)
    assert up.code == 0, up.err
    assert up.out.strip().endswith(f"from none to {HEAD} (head)")
    assert current_revision(compozy_empty_database) == HEAD

    again = cli("migrate", "up", *flags)
    assert again.out.strip() == f"already at {HEAD} (head)"

    one_back = cli("migrate", "down", "--steps", "1", *flags)
    assert one_back.code == 0, one_back.err
    assert current_revision(compozy_empty_database) == previous

    assert cli("migrate", "up", *flags).code == 0
    assert current_revision(compozy_empty_database) == HEAD

    to_base = cli("migrate", "down", "--to", "base", *flags)
    assert to_base.code == 0, to_base.err
    assert to_base.out.strip().endswith(" to none")
    assert current_revision(compozy_empty_database) is None

    first = cli("migrate", "up", "--to", REVISIONS[0], *flags)
    assert first.code == 0, first.err
    assert current_revision(compozy_empty_database) == REVISIONS[0]
    status = cli("migrate", "status", *flags)
    assert f"pending:  {', '.join(REVISIONS[1:]) or 'none'}" in status.out


@SHARED_BACKENDS
def test_down_more_steps_than_applied_fails_and_changes_nothing(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    flags = db_flags(compozy_empty_database)
    assert cli("migrate", "up", *flags).code == 0

    result = cli("migrate", "down", "--steps", "99", *flags)

    assert "--steps 99" in assert_one_error_line(result)
    assert current_revision(compozy_empty_database) == HEAD


@SHARED_BACKENDS
@pytest.mark.parametrize("direction", ["up", "down"])
def test_unknown_revision_is_refused(
    cli: Cli, compozy_empty_database: TestDatabase, direction: str
) -> None:
    compozy_empty_database.open()  # the database exists (empty), so only the revision is wrong
    result = cli("migrate", direction, "--to", "no-such-rev", *db_flags(compozy_empty_database))

    assert "no-such-rev" in assert_one_error_line(result)
    assert current_revision(compozy_empty_database) is None


# --- migrate down that would delete rows --------------------------------------------------------


def _with_an_admin(database: TestDatabase) -> None:
    """Migrate the database to the head and give it an admin with a key: two rows to lose."""
    assert database.config is not None
    with open_store(database.config.model_copy(update={"auto_migrate": True})) as store:
        admin = store.auth.create_initial_admin_if_none(User(email="ops@x.io"))
        key, _ = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        store.auth.create_api_key(key)


DROPPED_AT_BASE = [
    f"migrate down from {HEAD} (head) to none drops these tables and every row in them:",
    "  api_keys         1 row",
    "  task_states      0 rows",
    "  users            1 row",
    "  workflow_states  0 rows",
]


@SHARED_BACKENDS
def test_a_down_that_drops_rows_lists_them_and_needs_yes_off_a_terminal(
    compozy_empty_database: TestDatabase,
) -> None:
    _with_an_admin(compozy_empty_database)
    flags = db_flags(compozy_empty_database)

    refused = run_compozy("migrate", "down", "--to", "base", *flags)

    line = assert_one_error_line(refused)
    assert "would delete what is listed above" in line
    assert "pass --yes" in line
    assert refused.out.splitlines()[:5] == DROPPED_AT_BASE
    assert "Every API key stops working" in refused.out
    assert current_revision(compozy_empty_database) == HEAD

    done = run_compozy("migrate", "down", "--to", "base", "--yes", *flags)
    assert done.code == 0, done.err
    assert done.out.splitlines()[:5] == DROPPED_AT_BASE
    assert done.out.strip().endswith(f"from {HEAD} (head) to none")
    assert current_revision(compozy_empty_database) is None


@SHARED_BACKENDS
def test_a_down_that_drops_no_rows_asks_nothing(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    _with_an_admin(compozy_empty_database)
    flags = db_flags(compozy_empty_database)

    # The head revision adds columns and indexes, no table: reverting it deletes no rows.
    one_back = cli("migrate", "down", "--steps", "1", *flags)

    assert one_back.code == 0, one_back.err
    assert one_back.out.strip().endswith(f"from {HEAD} (head) to {REVISIONS[-2]}")
    assert current_revision(compozy_empty_database) == REVISIONS[-2]


@SHARED_BACKENDS
def test_a_down_that_drops_columns_holding_values_lists_them_and_needs_yes(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    _with_an_admin(compozy_empty_database)
    with compozy_empty_database.open() as store:
        store.workflows.upsert_state(WorkflowState(workflow_id="w", status=Status.PENDING))
        assert store.queue.claim("worker-1", limit=1, lease=60.0)
    flags = db_flags(compozy_empty_database)
    # Down to the revision before the one that added the claim columns.
    before_claims = REVISIONS[REVISIONS.index(CLAIM_COLUMNS_REVISION) - 1]
    down = ("migrate", "down", "--to", before_claims, *flags)

    line = assert_one_error_line(cli(*down))
    assert "pass --yes" in line
    assert current_revision(compozy_empty_database) == HEAD

    done = cli(*down, "--yes")
    assert done.code == 0, done.err
    assert done.out.splitlines()[:4] == [
        f"migrate down from {HEAD} (head) to {before_claims} drops these columns and every "
        "value in them:",
        "  workflow_states.claim_count       1 value",
        "  workflow_states.lease_expires_at  1 value",
        "  workflow_states.worker_id         1 value",
    ]
    assert current_revision(compozy_empty_database) == before_claims


@pytest.mark.parametrize(("answer", "code", "revision"), [("n", 1, HEAD), ("y", 0, None)])
def test_on_a_terminal_a_down_that_drops_rows_asks_first(
    cli: Cli, tmp_path: Path, answer: str, code: int, revision: str | None
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    terminal, process_side = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "compozy.cli", "migrate", "down", "--to", "base"],
            cwd=demo,
            env=env,
            stdin=process_side,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(terminal, f"{answer}\n".encode())
        out, err = process.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(process_side)

    assert process.returncode == code, err
    assert out.splitlines()[1:5] == DROPPED_AT_BASE[1:]
    assert "Drop them? [y/N]" in err
    assert ("nothing was changed" in err) is (answer == "n")
    database = load_config(demo / "compozy.yaml").database
    with open_store(database.model_copy(update={"auto_migrate": False})) as store:
        assert migrations.status(store).current == revision


# --- errors: one line, exit 2, no secrets --------------------------------------------------------


def test_down_of_a_missing_sqlite_file_is_refused_without_creating_it(
    cli: Cli, tmp_path: Path
) -> None:
    database = tmp_path / "missing.db"

    result = cli(
        "migrate", "down", "--steps", "1", "--db-driver", "sqlite", "--db-path", str(database)
    )

    assert "no SQLite database" in assert_one_error_line(result)
    assert not database.exists()


def test_down_needs_to_or_steps(cli: Cli, tmp_path: Path) -> None:
    database = tmp_path / "x.db"

    result = cli("migrate", "down", "--db-driver", "sqlite", "--db-path", str(database))

    assert "--to REV or --steps N" in assert_one_error_line(result)
    assert not database.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["migrate", "status", "--bogus"], "no such option: --bogus"),
        (["migrate", "down", "--steps", "many"], "--steps"),
        (["migrate", "sideways"], "sideways"),
        (["migrate"], "missing command"),
        ([], "missing command"),
        (["migrate", "status", "--config", "missing.yaml"], "missing.yaml does not exist"),
        (["migrate", "status", "--db-driver", "mysql"], "'mysql'"),
        (["migrate", "status"], "postgres driver (the default) needs database.conn_string"),
        (
            [
                "migrate",
                "status",
                "--db-driver",
                "postgres",
                "--db-conn-string",
                UNREACHABLE_POSTGRES,
            ],
            "cannot reach postgres 127.0.0.1:1/x",
        ),
    ],
    ids=[
        "unknown-flag",
        "bad-int",
        "unknown-command",
        "no-migrate-command",
        "no-command",
        "missing-config-file",
        "unknown-driver",
        "postgres-default-unset",
        "unreachable-postgres",
    ],
)
def test_user_errors_exit_2_with_one_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no compozy.yaml here

    result = cli(*args)

    assert expected in assert_one_error_line(result)
    assert result.out == ""


@pytest.mark.parametrize("command", [["status"], ["up"], ["down", "--steps", "1"]])
def test_a_password_in_the_connection_string_is_never_printed(cli: Cli, command: list[str]) -> None:
    url = "postgresql://u:SuperSecret123@127.0.0.1:1/x"

    result = cli("migrate", *command, "--db-driver", "postgres", "--db-conn-string", url)

    assert_one_error_line(result)
    assert "SuperSecret123" not in result.out + result.err


def test_repeated_runs_print_each_warning_once(cli: Cli, tmp_path: Path) -> None:
    # A PostgreSQL setting on SQLite: the config warns that it is ignored.
    config = tmp_path / "compozy.yaml"
    config.write_text("database:\n  host: db.internal\n", encoding="utf-8")
    flags = ["--config", str(config), "--db-driver", "sqlite", "--db-path", str(tmp_path / "x.db")]
    cli("migrate", "status", *flags)

    result = cli("migrate", "status", *flags)

    assert result.code == 0
    assert len([line for line in result.err_lines if "Ignoring database.host" in line]) == 1


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], ["migrate", "--help"], ["migrate", "down", "--help"], ["init", "-h"]],
)
def test_help_exits_0(cli: Cli, args: list[str]) -> None:
    result = cli(*args)

    assert result.code == 0
    assert "Usage" in result.out
    assert result.err == ""


def test_version_prints_the_version(cli: Cli) -> None:
    result = cli("--version")

    assert result.code == 0
    assert result.out.strip() == f"compozy {compozy.__version__}"


# --- messages that say the cause and what to do (issue 10, points 4 to 6) ---------------------


def _deep_json(levels: int) -> str:
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_a_libpq_conn_string_with_a_port_that_is_not_a_number_is_one_line(tmp_path: Path) -> None:
    conn_string = "host=127.0.0.1 port=abc dbname=x"

    result = run_compozy(
        "migrate",
        "status",
        "--db-driver",
        "postgres",
        "--db-conn-string",
        conn_string,
        cwd=tmp_path,
    )

    assert assert_one_error_line(result) == (
        "error: database.conn_string has port='abc', which is not a port number from 1 to 65535; "
        "write it as port=5432"
    )


@pytest.mark.parametrize("levels", [65, 5000])
def test_run_input_nested_too_deeply_is_one_line_naming_the_limit(
    cli: Cli, tmp_path: Path, levels: int
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)

    result = run_compozy("run", "hello", "--input", _deep_json(levels), cwd=demo)

    assert assert_one_error_line(result) == (
        "error: --input is nested too deeply: its objects and arrays nest deeper than 64 levels, "
        "the limit for stored JSON; flatten it"
    )
    with open_project(demo) as store:
        assert store.workflows.list_states() == []


def test_commands_find_compozy_yaml_in_a_folder_above_as_git_does(cli: Cli, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    inside = demo / "workflows" / "drafts"
    inside.mkdir()

    status = run_compozy("migrate", "status", cwd=inside)
    ran = run_compozy("run", "hello", cwd=inside)

    assert status.code == 0, status.err
    assert status.out.splitlines()[0] == f"database: sqlite {demo / '.compozy' / 'compozy.db'}"
    assert ran.code == 0, ran.err
    assert "status:    SUCCESS" in ran.out


def test_without_compozy_yaml_in_any_folder_above_the_error_says_so(tmp_path: Path) -> None:
    nowhere = tmp_path / "not-a-project"
    nowhere.mkdir()

    result = run_compozy("migrate", "status", cwd=nowhere)

    line = assert_one_error_line(result)
    assert line.startswith(f"error: no compozy.yaml in {nowhere} or any folder above it")
    assert "pass --config FILE" in line


@SHARED_BACKENDS
def test_a_database_migrated_by_a_newer_compozy_says_to_upgrade_compozy(
    cli: Cli, tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    store = compozy_empty_database.open()
    migrations.upgrade(store)
    with sql_connection(store, write=True) as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    flags = db_flags(compozy_empty_database)

    results = [
        run_compozy("run", "hello", *flags, cwd=demo),  # auto-migrates on open
        run_compozy("migrate", "up", *flags, cwd=demo),
    ]

    for result in results:
        assert assert_one_error_line(result) == (
            f"error: the database is at revision 9999, but this compozy ({compozy.__version__}) "
            f"knows revisions up to {HEAD}: a newer compozy migrated it; upgrade compozy (pip "
            "install --upgrade compozy) to use this database"
        )
    assert current_revision_text(compozy_empty_database) == "9999"


def current_revision_text(database: TestDatabase) -> str:
    """The raw revision in alembic_version, read without compozy's checks."""
    store = database.open()
    try:
        with sql_connection(store) as conn:
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        store.close()


def _make_read_only(path: Path) -> Callable[[], None] | None:
    """Make ``path`` unwritable even for root (chattr +i) or by mode bits; return the undo, or
    None where this machine cannot."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        return lambda: path.chmod(mode)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        return None

    def undo() -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True)

    return undo


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_sqlite_folder_or_file_says_which_and_what_to_do(
    cli: Cli, tmp_path: Path, what: str
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    database = demo / ".compozy" / "compozy.db"
    undo = _make_read_only(database.parent if what == "folder" else database)
    if undo is None:
        pytest.skip("cannot make a path read-only here (no chattr for root)")
    try:
        result = run_compozy("run", "hello", cwd=demo)
    finally:
        undo()

    line = assert_one_error_line(result)
    assert line.startswith(f"error: cannot use sqlite {database}: ")
    if what == "folder":
        assert f"its folder {database.parent} is read-only" in line
        assert "write-ahead log (WAL) needs to create compozy.db-wal and compozy.db-shm" in line
        assert "make the folder writable" in line
    else:
        assert f"the file {database} is read-only; make it writable" in line
    assert "attempt to write a readonly database" not in line


def test_choices_are_read_in_any_letter_case_on_the_command_line(tmp_path: Path) -> None:
    flags = ["--db-driver", "SQLite", "--db-path", str(tmp_path / "x.db")]

    from_flags = run_compozy("migrate", "up", *flags, cwd=tmp_path)
    from_env = run_compozy(
        "executions",
        "list",
        "--status",
        "Success",
        cwd=tmp_path,
        env={"DB_DRIVER": "SQLITE", "DB_PATH": str(tmp_path / "x.db")},
    )

    assert from_flags.code == 0, from_flags.err
    assert from_env.code == 0, from_env.err
    assert "no executions" in from_env.err


def test_a_lost_init_database_is_recreated_with_a_loud_warning_once(
    cli: Cli, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    database = demo / ".compozy" / "compozy.db"
    for file in database.parent.iterdir():
        file.unlink()

    first = run_compozy("run", "hello", cwd=demo)
    second = run_compozy("run", "hello", cwd=demo)

    assert first.code == 0, first.err
    warnings = [line for line in first.err_lines if line.startswith("warning: ")]
    assert warnings == [
        f"warning: there is no SQLite database at {database}, where `compozy init` put this "
        "project's database; an empty one is created there now. If the project had executions, "
        "users or API keys, stop compozy and restore them: copy a backup made by `compozy "
        "backup` to that path, or load an export with `compozy import FILE --replace`."
    ]
    assert second.code == 0
    assert [line for line in second.err_lines if line.startswith("warning: ")] == []


def test_a_new_database_outside_a_compozy_folder_is_created_quietly(
    cli: Cli, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    init_project(cli, demo)
    config = demo / "compozy.yaml"
    config.write_text(
        config.read_text().replace(".compozy/compozy.db", "data/state.db"), encoding="utf-8"
    )

    result = run_compozy("run", "hello", cwd=demo)

    assert result.code == 0, result.err
    assert (demo / "data" / "state.db").is_file()
    assert [line for line in result.err_lines if line.startswith("warning: ")] == []

"""The `compozy` command, run in-process: init, migrate up/down/status, and its error contract."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml
from cli_support import SHARED_BACKENDS, Cli, Result, assert_one_error_line, db_flags

import compozy
import compozy.cli.init as cli_init
from compozy.auth import Role
from compozy.auth.keys import fingerprint, verify_api_key
from compozy.config import load_config
from compozy.errors import StoreUnavailable
from compozy.store import Store, migrations, open_store
from compozy_testkit.databases import TestDatabase

KEY_PATTERN = re.compile(r"cpzy_[A-Za-z0-9]+_[A-Za-z0-9]+")
UNREACHABLE_POSTGRES = "postgresql://nobody@127.0.0.1:1/x"
REVISIONS = migrations.revisions()
HEAD = REVISIONS[-1]


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
    keys = KEY_PATTERN.findall(result.out)
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


def test_init_reports_the_knowledge_warning_as_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("init", str(tmp_path / "demo"))

    assert result.code == 0
    warnings = [line for line in result.err_lines if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert "knowledge features" in warnings[0]
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


# --- migrate on both backends --------------------------------------------------------------------


@SHARED_BACKENDS
def test_status_of_an_empty_database_shows_every_revision_pending(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    result = cli("migrate", "status", *db_flags(compozy_empty_database))

    assert result.code == 0, result.err
    never_created = compozy_empty_database.backend == "sqlite-file"
    if never_created:  # status reports a missing SQLite file without creating it
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
    flags = ["--db-driver", "sqlite", "--db-path", str(tmp_path / "x.db")]
    cli("migrate", "status", *flags)

    result = cli("migrate", "status", *flags)

    assert result.code == 0
    assert len([line for line in result.err_lines if "knowledge features" in line]) == 1


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

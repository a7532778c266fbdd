"""`compozy users ...` and `compozy keys ...`: operators manage users and keys on the database
through the config, without an API key; the last admin and admin key stay unless --force."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import SHARED_BACKENDS, Cli, assert_one_error_line, db_flags, run_compozy

from compozy.auth import Role
from compozy.auth.keys import fingerprint, verify_api_key
from compozy.errors import APIKeyNotFound
from compozy.store import Store, migrations, open_store
from compozy_testkit.databases import TestDatabase

KEY_PATTERN = re.compile(r"cpzy_[A-Za-z0-9]+_[A-Za-z0-9]+")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _store(database: TestDatabase) -> Store:
    assert database.config is not None
    return open_store(database.config.model_copy(update={"auto_migrate": True}))


def _created_key(result_out: str) -> str:
    """`keys create` prints the key alone on stdout."""
    assert KEY_PATTERN.fullmatch(result_out.strip()), result_out
    return result_out.strip()


@SHARED_BACKENDS
def test_operators_create_list_and_delete_users_and_keys_as_real_processes(
    compozy_empty_database: TestDatabase,
) -> None:
    flags = db_flags(compozy_empty_database)
    _store(compozy_empty_database).close()  # migrated, no users

    empty = run_compozy("users", "list", *flags)
    assert empty.code == 0, empty.err
    assert empty.out == ""
    assert "compozy users create EMAIL --role admin" in empty.err

    created = run_compozy("users", "create", "Ops@Example.org", "--role", "ADMIN", *flags)
    assert created.code == 0, created.err
    assert created.out.startswith("created admin Ops@Example.org (user ")
    key = run_compozy("keys", "create", "--user", "ops@example.org", *flags)
    assert key.code == 0, key.err
    plaintext = _created_key(key.out)
    assert "shown only this once" in key.err

    with _store(compozy_empty_database) as store:
        admin = store.auth.get_user_by_email("ops@example.org")
        stored = store.auth.get_api_key_by_fingerprint(fingerprint(plaintext))
        assert admin.role is Role.ADMIN
        assert stored.user_id == admin.id
        assert verify_api_key(plaintext, stored)

    users = run_compozy("users", "list", *flags).out.splitlines()
    assert users[0].split() == ["ID", "EMAIL", "ROLE", "KEYS", "CREATED"]
    assert users[1].split()[:4] == [admin.id, "Ops@Example.org", "admin", "1"]
    keys = run_compozy("keys", "list", *flags).out.splitlines()
    assert keys[0].split() == ["ID", "PREFIX", "USER", "CREATED", "LAST", "USED"]
    row = keys[1].split()
    assert row[:3] == [stored.id, stored.prefix, "Ops@Example.org"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", row[3])
    assert row[4] == "-"  # never used
    assert plaintext not in "\n".join(keys)

    member = run_compozy("users", "create", "dev@example.org", *flags)
    assert "created user dev@example.org" in member.out
    deleted = run_compozy("users", "delete", "dev@example.org", *flags)
    assert deleted.code == 0, deleted.err
    assert "deleted user" in deleted.out
    assert "dev@example.org" not in run_compozy("users", "list", *flags).out


@SHARED_BACKENDS
def test_the_last_admin_key_and_admin_need_force_and_keys_create_is_the_way_back(
    compozy_empty_database: TestDatabase,
) -> None:
    flags = db_flags(compozy_empty_database)
    assert run_compozy("migrate", "up", *flags).code == 0
    assert run_compozy("users", "create", "ops@x.io", "--role", "admin", *flags).code == 0
    first = _created_key(run_compozy("keys", "create", "--user", "ops@x.io", *flags).out)
    prefix = first.split("_")[1]

    refused = run_compozy("keys", "revoke", prefix, *flags)
    line = assert_one_error_line(refused)
    assert "last API key of an admin" in line
    assert "--force" in line
    assert "compozy keys create --user ops@x.io" in line
    refused_user = run_compozy("users", "delete", "ops@x.io", *flags)
    assert "only admin" in assert_one_error_line(refused_user)
    with _store(compozy_empty_database) as store:
        assert store.auth.get_api_key_by_fingerprint(fingerprint(first)).prefix == prefix

    forced = run_compozy("keys", "revoke", first, "--force", *flags)  # the whole (leaked) key
    assert forced.code == 0, forced.err
    assert f"prefix {prefix}" in forced.out
    assert "no admin can sign in now" in forced.err
    way_back = _created_key(run_compozy("keys", "create", "--user", "ops@x.io", *flags).out)

    with _store(compozy_empty_database) as store:
        with pytest.raises(APIKeyNotFound):
            store.auth.get_api_key_by_fingerprint(fingerprint(first))
        key = store.auth.get_api_key_by_fingerprint(fingerprint(way_back))
        assert store.auth.get_user_by_id(key.user_id).role is Role.ADMIN


@SHARED_BACKENDS
def test_start_on_a_database_without_users_says_how_to_create_the_first_admin(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    flags = db_flags(compozy_empty_database)
    process = subprocess.Popen(
        [sys.executable, "-m", "compozy.cli", "start", "--port", str(_free_port()), *flags],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while not any("no users" in line for line in lines):
            line = process.stderr.readline()
            assert line or process.poll() is None, lines
            assert time.monotonic() < deadline, lines
            lines.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    hint = next(line for line in lines if "no users" in line)
    assert hint.startswith("warning: ")
    assert "`compozy users create EMAIL --role admin`" in hint
    assert "`compozy keys create --user EMAIL`" in hint


# --- in-process: what is refused, in one line ----------------------------------------------------


@SHARED_BACKENDS
def test_a_member_and_its_keys_go_without_force_and_keys_filter_by_user(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    flags = db_flags(compozy_empty_database)
    cli("migrate", "up", *flags)
    cli("users", "create", "ops@x.io", "--role", "admin", *flags)
    cli("keys", "create", "--user", "ops@x.io", *flags)
    cli("users", "create", "dev@x.io", *flags)
    dev_key = _created_key(cli("keys", "create", "--user", "dev@x.io", *flags).out)

    listed = cli("keys", "list", "--user", "dev@x.io", *flags).out.splitlines()
    assert len(listed) == 2
    assert listed[1].split()[1:3] == [dev_key.split("_")[1], "dev@x.io"]

    revoked = cli("keys", "revoke", dev_key.split("_")[1], *flags)
    assert revoked.code == 0, revoked.err
    assert revoked.err == ""  # an admin can still sign in: no warning
    deleted = cli("users", "delete", "dev@x.io", *flags)
    assert deleted.out.strip().endswith("(dev@x.io) and 0 API keys")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["users", "create", "not-an-email"], "not an address"),
        (["users", "create", "a@x.io", "--role", "root"], "--role"),
        (["users", "delete", "nobody@x.io"], "no user has the email 'nobody@x.io'"),
        (["users", "delete", "no-such-id"], "user no-such-id not found"),
        (["keys", "create", "--user", "nobody@x.io"], "nobody@x.io"),
        (["keys", "create"], "--user"),
        (["keys", "revoke", "no-such-key"], "no api key has the id or prefix 'no-such-key'"),
        (["keys", "list", "--user", "nobody@x.io"], "nobody@x.io"),
    ],
)
def test_bad_arguments_are_one_line(
    cli: Cli, tmp_path: Path, args: list[str], expected: str
) -> None:
    sqlite = ["--db-driver", "sqlite", "--db-path", str(tmp_path / "c.db")]
    assert cli("migrate", "up", *sqlite).code == 0  # an empty, migrated database

    assert expected in assert_one_error_line(cli(*args, *sqlite))


def test_a_missing_sqlite_file_is_refused_not_created(cli: Cli, tmp_path: Path) -> None:
    database = tmp_path / "missing.db"
    for args in (["users", "list"], ["users", "create", "a@x.io"], ["keys", "list"]):
        result = cli(*args, "--db-driver", "sqlite", "--db-path", str(database))
        assert "there is no SQLite database at" in assert_one_error_line(result)
    assert not database.exists()


@SHARED_BACKENDS
def test_users_and_keys_never_migrate_the_database(
    cli: Cli, compozy_empty_database: TestDatabase
) -> None:
    older, head = migrations.revisions()[-2:]
    with compozy_empty_database.open() as store:
        migrations.upgrade(store, older)
    for command in (["users", "list"], ["keys", "list"]):
        line = assert_one_error_line(cli(*command, *db_flags(compozy_empty_database)))
        assert f"is at schema revision {older} and this compozy needs {head}" in line
        assert "run `compozy migrate up` first" in line
    with compozy_empty_database.open() as store:
        assert store.health().revision == older  # not moved by an operator's command

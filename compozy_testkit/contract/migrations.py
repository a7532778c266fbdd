"""Contract of the schema and its migrations, on a database that starts empty.

These tests drive compozy's own migrations, so they need ``compozy_empty_database`` from the
plugin (a database with no schema on the current backend), not only ``compozy_store``.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from compozy.core import Status
from compozy.errors import CompozyError, ValidationError
from compozy.store import Store, migrations, sql_connection
from compozy.store.migrations.sqlfile import SQL_DIR, read_section
from compozy.store.tables import (
    CHECK_CONSTRAINTS,
    TABLES,
    api_keys,
    metadata,
    task_states,
    users,
    workflow_states,
)
from compozy_testkit.contract._build import at, workflow
from compozy_testkit.databases import TestDatabase

APP_TABLES = {t.name for t in TABLES}


def _tables(store: Store) -> set[str]:
    with sql_connection(store) as conn:
        return set(sa.inspect(conn).get_table_names()) - {"alembic_version"}


def _schema(store: Store) -> dict[str, Any]:
    """Each table with its columns and index names: what a revision must change."""
    with sql_connection(store) as conn:
        inspector = sa.inspect(conn)
        return {
            table: (
                [c["name"] for c in inspector.get_columns(table)],
                sorted(str(i["name"]) for i in inspector.get_indexes(table)),
            )
            for table in sorted(set(inspector.get_table_names()) - {"alembic_version"})
        }


def _row_ids(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every table as (key, status or owner), read with plain SQL."""
    queries = {
        "workflow_states": "SELECT workflow_exec_id, status FROM workflow_states",
        "task_states": "SELECT task_exec_id, workflow_exec_id, status FROM task_states",
        "users": "SELECT id, email FROM users",
        "api_keys": "SELECT id, user_id FROM api_keys",
    }
    with sql_connection(store) as conn:
        return {
            table: sorted(tuple(row) for row in conn.execute(sa.text(sql)))
            for table, sql in queries.items()
        }


def schema_names(conn: sa.Connection) -> dict[str, Any]:
    """Every table, column, index and constraint name, as the database reports them."""
    inspector = sa.inspect(conn)
    names: dict[str, Any] = {}
    for table in sorted(APP_TABLES):
        pk = inspector.get_pk_constraint(table)
        names[table] = {
            "columns": [c["name"] for c in inspector.get_columns(table)],
            "primary key": (pk["name"], tuple(pk["constrained_columns"])),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]))
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign keys": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
        }
    return names


def expected_names() -> dict[str, Any]:
    """The same description, built from ``store/tables.py``: what both databases must report."""
    names: dict[str, Any] = {}
    for table in TABLES:
        pk = table.primary_key
        names[table.name] = {
            "columns": [c.name for c in table.columns],
            "primary key": (pk.name, tuple(c.name for c in pk.columns)),
            "indexes": sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes),
            "unique": sorted(
                (u.name, tuple(c.name for c in u.columns))
                for u in table.constraints
                if isinstance(u, sa.UniqueConstraint)
            ),
            "foreign keys": sorted(
                (f.name, tuple(f.column_keys), f.referred_table.name)
                for f in table.foreign_key_constraints
            ),
            "checks": sorted(CHECK_CONSTRAINTS[table.name]),
        }
    return names


class MigrationContract:
    """Migrations up, down and up again leave the schema ``store/tables.py`` describes."""

    def test_single_head_revision(self) -> None:
        script = ScriptDirectory(str(migrations.SCRIPT_LOCATION))
        assert len(script.get_heads()) == 1
        history = migrations.revisions()
        for older, newer in itertools.pairwise(history):
            assert script.get_revision(newer).down_revision == older

    def test_every_revision_has_postgres_and_sqlite_sql_with_up_and_down(self) -> None:
        for revision in migrations.revisions():
            for driver in ("postgres", "sqlite"):
                path = SQL_DIR / f"{revision}.{driver}.sql"
                assert read_section(path, "up").strip(), f"{path} has an empty up section"
                assert read_section(path, "down").strip(), f"{path} has an empty down section"

    def test_up_down_up_step_by_step(self, compozy_empty_database: TestDatabase) -> None:
        store = compozy_empty_database.open()
        assert migrations.status(store).current is None
        seen = [_schema(store)]
        for revision in migrations.revisions():
            assert migrations.upgrade(store, revision).current == revision
            seen.append(_schema(store))
            assert seen[-1] != seen[-2], f"revision {revision} changed no table, column or index"
        assert set(seen[-1]) == APP_TABLES
        for expected in reversed(seen[:-1]):
            migrations.downgrade(store, steps=1)
            assert _schema(store) == expected
        assert migrations.status(store).current is None
        final = migrations.upgrade(store)
        assert (final.current, final.pending) == (final.head, [])
        assert _tables(store) == APP_TABLES

    def test_migrated_schema_matches_tables_py(self, compozy_empty_database: TestDatabase) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store)
        with sql_connection(store) as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == []

    def test_names_are_the_same_on_every_backend(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store)
        with sql_connection(store) as conn:
            assert schema_names(conn) == expected_names()

    def test_data_survives_a_down_and_up_of_later_revisions(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store)
        stored = workflow(store, input={"keep": "me"})
        migrations.downgrade(store, to=migrations.revisions()[0])
        migrations.upgrade(store)
        assert store.workflows.get_state(stored.workflow_exec_id) == stored

    def test_rows_written_before_0003_survive_its_up_and_down_and_are_read_and_claimed(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store, "0002")
        key_print = hashlib.sha256(b"k1").digest()
        # The columns 0002 has, written as a 0002 compozy did.
        with sql_connection(store, write=True) as conn:
            conn.execute(
                sa.insert(workflow_states),
                [
                    {
                        "workflow_exec_id": "old-running",
                        "workflow_id": "legacy",
                        "status": "RUNNING",
                        "input": {"q": 1},
                        "output": None,
                        "created_at": at(1),
                        "updated_at": at(1),
                    },
                    {
                        "workflow_exec_id": "old-done",
                        "workflow_id": "legacy",
                        "status": "SUCCESS",
                        "input": None,
                        "output": {"answer": 42},
                        "created_at": at(2),
                        "updated_at": at(3),
                    },
                ],
            )
            conn.execute(
                sa.insert(task_states),
                [
                    {
                        "task_exec_id": f"t-{exec_id}",
                        "task_id": "t",
                        "workflow_id": "legacy",
                        "workflow_exec_id": exec_id,
                        "component": "task",
                        "status": status,
                        "execution_type": "basic",
                        "created_at": at(4),
                        "updated_at": at(4),
                    }
                    for exec_id, status in (("old-running", "RUNNING"), ("old-done", "SUCCESS"))
                ],
            )
            conn.execute(
                sa.insert(users),
                {
                    "id": "u1",
                    "email": "Ada@example.com",
                    "email_key": "ada@example.com",
                    "role": "admin",
                    "created_at": at(0),
                },
            )
            conn.execute(
                sa.insert(api_keys),
                {
                    "id": "k1",
                    "user_id": "u1",
                    "prefix": "pfx1",
                    "hash": b"bcrypt-hash",
                    "fingerprint": key_print,
                    "created_at": at(0),
                },
            )
        before = _row_ids(store)

        migrations.upgrade(store)
        assert _row_ids(store) == before
        with sql_connection(store) as conn:
            claims = conn.execute(
                sa.text(
                    "SELECT workflow_exec_id, worker_id, lease_expires_at, claim_count,"
                    " cancel_requested_at FROM workflow_states ORDER BY workflow_exec_id"
                )
            ).all()
        assert [tuple(r) for r in claims] == [
            ("old-done", None, None, 0, None),
            ("old-running", None, None, 0, None),
        ]
        running, done = (
            store.workflows.get_state("old-running"),
            store.workflows.get_state("old-done"),
        )
        assert (running.status, running.input, running.created_at) == (
            Status.RUNNING,
            {"q": 1},
            at(1),
        )
        assert (done.status, done.output, done.updated_at) == (
            Status.SUCCESS,
            {"answer": 42},
            at(3),
        )
        assert {k: t.status for k, t in running.tasks.items()} == {"t": Status.RUNNING}
        assert {k: t.status for k, t in done.tasks.items()} == {"t": Status.SUCCESS}
        summaries = store.workflows.list_page().items
        assert [(s.workflow_exec_id, s.worker_id, s.claim_count) for s in summaries] == [
            ("old-done", None, 0),
            ("old-running", None, 0),
        ]
        assert store.auth.get_user_by_email("ada@EXAMPLE.com").id == "u1"
        assert [u.id for u in store.auth.list_users_page().items] == ["u1"]
        assert store.auth.get_api_key_by_fingerprint(key_print).id == "k1"
        assert [k.id for k in store.auth.list_api_keys_page("u1").items] == ["k1"]
        # An execution RUNNING before workers claimed has no owner: a worker can take it.
        claimed = store.queue.claim("w1", limit=10, lease=30)
        assert [(c.workflow_exec_id, c.claim_count, c.previous_worker) for c in claimed] == [
            ("old-running", 1, None)
        ]

        migrations.downgrade(store, to="0002")
        assert migrations.status(store).current == "0002"
        assert _row_ids(store) == before
        with sql_connection(store) as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("workflow_states")}
        assert "claim_count" not in columns

    def test_auto_migrate_brings_a_new_database_to_the_head(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        if compozy_empty_database.shareable:
            store = compozy_empty_database.open(auto_migrate=True)
        else:
            import sqlite3

            from compozy.store import open_sqlite_connection

            store = open_sqlite_connection(
                sqlite3.connect(":memory:", check_same_thread=False), auto_migrate=True
            )
        try:
            assert migrations.status(store).up_to_date
        finally:
            store.close()

    def test_two_processes_migrating_at_once_both_succeed(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        if not compozy_empty_database.shareable:
            pytest.skip("needs two Stores on one database (in-memory SQLite is private)")
        stores = [compozy_empty_database.open() for _ in range(4)]
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def migrate(store: Store) -> None:
            barrier.wait()
            try:
                migrations.upgrade(store)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert migrations.status(stores[0]).up_to_date

    def test_down_by_more_steps_than_applied_is_refused_and_changes_nothing(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store)
        with pytest.raises(ValidationError, match="--steps 99"):
            migrations.downgrade(store, steps=99)
        assert migrations.status(store).up_to_date

    def test_unknown_revision_is_refused(self, compozy_empty_database: TestDatabase) -> None:
        store = compozy_empty_database.open()
        with pytest.raises(ValidationError, match="unknown revision 'nope'"):
            migrations.upgrade(store, to="nope")
        assert migrations.status(store).current is None

    def test_a_database_migrated_by_a_newer_compozy_is_reported(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        migrations.upgrade(store)
        with sql_connection(store, write=True) as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'from-the-future'"))
        with pytest.raises(CompozyError, match="newer compozy"):
            migrations.status(store)

    @pytest.mark.compozy_backends("sqlite", "sqlite-file", reason="foreign keys off is SQLite's")
    def test_sqlite_migrations_run_with_foreign_keys_off_and_check_them_before_commit(
        self, compozy_empty_database: TestDatabase
    ) -> None:
        store = compozy_empty_database.open()
        # A check of compozy's own driver (not of the protocol), so it reaches inside the store.
        engine, driver = store._db.engine, store._db.driver
        with engine.connect() as conn:
            with driver.migration(conn):
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        first = migrations.revisions()[0]
        migrations.upgrade(store, first)
        # A dangling reference written behind the store's back must stop the next migration.
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute(
                "INSERT INTO task_states (task_exec_id, task_id, workflow_id, workflow_exec_id,"
                " component, status, execution_type, created_at, updated_at) VALUES ('t', 't',"
                " 'w', 'missing', 'task', 'RUNNING', 'basic', '2026-01-01T00:00:00.000000Z',"
                " '2026-01-01T00:00:00.000000Z')"
            )
            raw.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(CompozyError, match="foreign keys"):
            migrations.upgrade(store)
        assert migrations.status(store).current == first

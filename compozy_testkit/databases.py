"""One test's database on one backend, and the Stores a test opens on it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compozy.config import DatabaseConfig
    from compozy.store import Store
    from compozy_testkit.provision.postgres import PostgresServer
    from compozy_testkit.provision.sqlite import SQLiteTemplates

# Children before parents; task_states' own parent links cascade.
CLEAN_SQL = (
    "DELETE FROM api_keys; DELETE FROM users; DELETE FROM task_states; DELETE FROM workflow_states"
)


@dataclass
class WorkerPostgres:
    """This worker's PostgreSQL database, cloned from the run's migrated template."""

    server: PostgresServer
    name: str
    url: str
    prefix: str
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def clean(self) -> None:
        """Delete every row (the schema stays)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(CLEAN_SQL)

    def new_empty_database(self) -> tuple[str, str]:
        """A new database with no schema at all: (name, url)."""
        name = f"{self.name}_e{next(self._counter)}"
        return name, self.server.create_database(name)


class TestDatabase:
    """A clean database for one test; ``open()`` gives Stores on it, all closed at teardown."""

    __test__ = False  # not a test class, whatever pytest's collection patterns say

    def __init__(
        self,
        backend: str,
        *,
        migrated: bool,
        templates: SQLiteTemplates | None = None,
        tmp_path: Path | None = None,
        postgres: WorkerPostgres | None = None,
    ) -> None:
        self.backend = backend
        self.migrated = migrated
        self._templates = templates
        self._tmp_path = tmp_path
        self._postgres = postgres
        self._stores: list[Store] = []
        self._empty_pg: str | None = None
        self.config: DatabaseConfig | None = None
        if backend == "sqlite-file":
            assert tmp_path is not None
            from compozy_testkit.provision.sqlite import file_config

            self.config = file_config(tmp_path / ("compozy.db" if migrated else "empty.db"))
        elif backend == "postgres":
            assert postgres is not None
            from compozy.config import DatabaseConfig

            url = postgres.url
            if not migrated:
                self._empty_pg, url = postgres.new_empty_database()
            self.config = DatabaseConfig(driver="postgres", conn_string=url, auto_migrate=False)

    @property
    def shareable(self) -> bool:
        """False for in-memory SQLite, which only its one Store can see."""
        return self.backend != "sqlite"

    def open(self, **overrides: Any) -> Store:
        """A new Store on this database; ``overrides`` replace DatabaseConfig fields."""
        from compozy.store import open_sqlite_connection, open_store

        if self.backend == "sqlite":
            if self._stores:
                raise RuntimeError("an in-memory SQLite database is private to its one Store")
            busy_timeout = float(overrides.get("busy_timeout", 5.0))
            if self.migrated:
                assert self._templates is not None
                store = self._templates.memory_store(busy_timeout=busy_timeout)
            else:
                import sqlite3

                connection = sqlite3.connect(":memory:", check_same_thread=False)
                store = open_sqlite_connection(connection, busy_timeout=busy_timeout)
        else:
            assert self.config is not None
            path = Path(str(self.config.path))
            if self.backend == "sqlite-file" and self.migrated and not path.exists():
                assert self._templates is not None
                self._templates.copy_file(path)
            config = self.config.model_copy(update=overrides) if overrides else self.config
            store = open_store(config)
        self._stores.append(store)
        return store

    def store(self) -> Store:
        """The test's main Store (the first one opened)."""
        return self._stores[0] if self._stores else self.open()

    def close(self) -> None:
        """Close every Store, then leave the database clean for the next test."""
        for store in self._stores:
            store.close()
        self._stores.clear()
        if self._postgres is not None:
            if self._empty_pg is not None:
                self._postgres.server.drop_database(self._empty_pg)
            else:
                self._postgres.clean()

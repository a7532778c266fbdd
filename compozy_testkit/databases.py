"""Where a test's database comes from, and the Stores a test opens on it.

Each worker (each process, with xdist) keeps one migrated database per backend and one warm
Store on it, reused by every test and wiped after each: opening a Store costs far more than a
test's own work (a new engine compiles its SQL again; on PostgreSQL it also connects), while
deleting a test's rows costs about a millisecond (benchmarks/isolation.py). Wiping deletes rows
through a real transaction, so it also isolates tests that commit, use threads or open more
Stores. A test that closes the warm Store, or breaks its schema, gets a fresh one (and on
PostgreSQL a fresh clone of the template) for the next test.
"""

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


@dataclass
class WorkerPostgres:
    """This worker's PostgreSQL database, cloned from the run's migrated template."""

    server: PostgresServer
    name: str
    url: str
    template: str
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def reclone(self) -> None:
        """Replace the worker database with a fresh clone of the template."""
        self.server.drop_database(self.name)
        self.server.create_database(self.name, template=self.template)

    def new_empty_database(self) -> tuple[str, str]:
        """A new database with no schema at all: (name, url)."""
        name = f"{self.name}_e{next(self._counter)}"
        return name, self.server.create_database(name)


class WorkerDatabases:
    """This worker's migrated database per backend, each with one warm Store."""

    def __init__(self, templates: SQLiteTemplates, workdir: Path) -> None:
        self._templates = templates
        self._file = workdir / "worker.db"
        self.postgres: WorkerPostgres | None = None  # set when a postgres test first needs it
        self._warm: dict[str, Store] = {}

    def config(self, backend: str) -> DatabaseConfig | None:
        """How to open another Store on the backend's worker database (None: in memory)."""
        from compozy.config import DatabaseConfig
        from compozy_testkit.provision.sqlite import file_config

        if backend == "sqlite-file":
            if not self._file.exists():
                self._templates.copy_file(self._file)
            return file_config(self._file)
        if backend == "postgres":
            assert self.postgres is not None, "the postgres backend has no database"
            return DatabaseConfig(
                driver="postgres", conn_string=self.postgres.url, auto_migrate=False
            )
        return None

    def warm_store(self, backend: str) -> Store:
        """The backend's reusable Store, reopened if the last test closed it."""
        from compozy.store import open_store

        store = self._warm.get(backend)
        if store is None or store.closed:
            config = self.config(backend)
            store = self._templates.memory_store() if config is None else open_store(config)
            self._warm[backend] = store
        return store

    def wipe(self, backend: str) -> None:
        """Delete every row the last test left; rebuild the database if that is not possible."""
        from compozy.errors import CompozyError
        from compozy.store import sql_connection
        from compozy.store.tables import TABLES

        # Through the warm Store even if the test never used it: it may have written through
        # Stores of its own.
        store = self.warm_store(backend)
        try:
            with sql_connection(store, write=True) as conn:
                for table in reversed(TABLES):  # children first
                    conn.execute(table.delete())
        except CompozyError:
            # The test changed the schema (migrated down, dropped a table): start over.
            store.close()
            del self._warm[backend]
            if backend == "sqlite-file":
                self._file.unlink()
            elif backend == "postgres" and self.postgres is not None:
                self.postgres.reclone()

    def private_memory_store(self, busy_timeout: float) -> Store:
        """A new in-memory copy of the migrated template, for a test that configures its Store."""
        return self._templates.memory_store(busy_timeout=busy_timeout)

    def close(self) -> None:
        """Close the warm Stores."""
        for store in self._warm.values():
            store.close()
        self._warm.clear()


class TestDatabase:
    """A clean database for one test; ``open()`` gives Stores on it, closed at teardown."""

    __test__ = False  # not a test class, whatever pytest's collection patterns say

    def __init__(
        self,
        backend: str,
        *,
        worker: WorkerDatabases | None = None,
        tmp_path: Path | None = None,
        postgres: WorkerPostgres | None = None,
    ) -> None:
        """Migrated (the worker's database) when ``worker`` is given, else empty, made here."""
        self.backend = backend
        self.migrated = worker is not None
        self._worker = worker
        self._postgres = postgres
        self._opened: list[Store] = []  # closed at teardown
        self._handed: list[Store] = []  # every Store given to the test, warm one included
        self._empty_pg: str | None = None
        self.config: DatabaseConfig | None = None
        if worker is not None:
            self.config = worker.config(backend)
        elif backend == "sqlite-file":
            assert tmp_path is not None
            from compozy_testkit.provision.sqlite import file_config

            self.config = file_config(tmp_path / "empty.db")
        elif backend == "postgres":
            assert postgres is not None
            from compozy.config import DatabaseConfig

            self._empty_pg, url = postgres.new_empty_database()
            self.config = DatabaseConfig(driver="postgres", conn_string=url, auto_migrate=False)

    @property
    def shareable(self) -> bool:
        """False for in-memory SQLite, which only its one Store can see."""
        return self.backend != "sqlite"

    def open(self, **overrides: Any) -> Store:
        """A Store on this database; ``overrides`` replace DatabaseConfig fields."""
        from compozy.store import open_sqlite_connection, open_store

        if self._worker is not None and not overrides and not self._handed:
            store = self._worker.warm_store(self.backend)
            self._handed.append(store)
            return store
        if self.backend == "sqlite":
            if self._handed:
                raise RuntimeError("an in-memory SQLite database is private to its one Store")
            busy_timeout = float(overrides.get("busy_timeout", 5.0))
            if self._worker is not None:
                store = self._worker.private_memory_store(busy_timeout)
            else:
                import sqlite3

                connection = sqlite3.connect(":memory:", check_same_thread=False)
                store = open_sqlite_connection(connection, busy_timeout=busy_timeout)
        else:
            assert self.config is not None
            config = self.config.model_copy(update=overrides) if overrides else self.config
            store = open_store(config)
        self._opened.append(store)
        self._handed.append(store)
        return store

    def store(self) -> Store:
        """The test's main Store (the first one opened)."""
        return self._handed[0] if self._handed else self.open()

    def close(self) -> None:
        """Close the Stores the test opened, then leave the database clean for the next test."""
        for store in self._opened:
            store.close()
        self._opened.clear()
        if self._worker is not None:
            self._worker.wipe(self.backend)
        elif self._empty_pg is not None and self._postgres is not None:
            self._postgres.server.drop_database(self._empty_pg)

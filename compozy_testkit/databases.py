"""Where a test's database comes from, and the Stores a test opens on it.

One class per backend (``MemoryBackend``, ``SQLiteFileBackend``, ``PostgresBackend``, named in
``BACKEND_CLASSES``) owns everything that differs between them: the migrated template, this
worker's copy of it, wiping it after a test, rebuilding it, and empty databases for migration
tests. ``WorkerDatabases`` makes each on first use; ``TestDatabase`` is what a test gets.

Each worker (each process, with xdist) keeps one migrated database per backend and one warm
Store on it, reused by every test and wiped after each: opening a Store costs far more than a
test's own work (a new engine compiles its SQL again; on PostgreSQL it also connects), while
deleting a test's rows costs about a millisecond (benchmarks/isolation.py). Wiping deletes rows
through a real transaction, so it also isolates tests that commit, use threads or open more
Stores. A test that closes the warm Store, or breaks its schema, gets a fresh one (and a fresh
copy of the template) for the next test.

The plugin loads ``compozy_testkit.fixtures`` with pytest and the standard library only; the
fixtures import this module when a test first needs a database.
"""

from __future__ import annotations

import itertools
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from compozy.config import DatabaseConfig
from compozy.core.closing import ClosedOnExit
from compozy.errors import CompozyError
from compozy.store import Store, open_store, sql_connection
from compozy.store.tables import TABLES
from compozy_testkit.provision.sqlite import (
    FileTemplate,
    MemoryTemplate,
    empty_memory_store,
    file_config,
)
from compozy_testkit.session import BACKENDS, KitState

EmptyDatabase = tuple[DatabaseConfig | None, Callable[[], None]]
"""A database with no schema: how to open Stores on it (None: private) and how to drop it."""


def _nothing() -> None:
    """Dropping a database that pytest's tmp_path or the process's memory takes care of."""


class Backend(ABC):
    """One kind of test database, for one worker: its migrated database and its warm Store."""

    name: ClassVar[str]
    """The name in test ids, ``--compozy-backend`` and ``@pytest.mark.compozy_backends``."""
    shareable: ClassVar[bool] = True
    """Other Stores and processes can open its databases (``config`` is not None)."""
    has_server: ClassVar[bool] = False
    """Its Stores connect to a database server (not a file or memory)."""

    def __init__(self, workdir: Path, state: KitState) -> None:
        """Set up this worker's copy of the template; ``workdir`` is the worker's own folder."""
        self._warm: Store | None = None
        self._datasets: dict[str, Any] = {}
        self._copies = itertools.count()

    def dataset_store(
        self, name: str, recipe: Callable[[Store], None], tmp_path: Path
    ) -> tuple[Store, Callable[[], None]]:
        """A Store on a private copy of dataset ``name`` (built by ``recipe`` the first time
        on this worker), and how to drop the copy."""
        template = self._datasets.get(name)
        if template is None:
            template = self._datasets[name] = self._build_dataset(name, recipe)
        return self._copy_dataset(template, tmp_path)

    @abstractmethod
    def _build_dataset(self, name: str, recipe: Callable[[Store], None]) -> Any:
        """A migrated database filled by ``recipe``, kept as the dataset's template."""

    @abstractmethod
    def _copy_dataset(self, template: Any, tmp_path: Path) -> tuple[Store, Callable[[], None]]:
        """A Store on a new copy of ``template``, and how to drop it."""

    @abstractmethod
    def config(self) -> DatabaseConfig | None:
        """How to open another Store on the worker's migrated database (None: private)."""

    @abstractmethod
    def reset(self) -> None:
        """Replace the worker's database with a new copy of the template."""

    @abstractmethod
    def empty_database(self, tmp_path: Path) -> EmptyDatabase:
        """A new database with no schema, for migration tests, and how to drop it."""

    def warm_store(self) -> Store:
        """The reusable Store on the worker's database, reopened if the last test closed it."""
        if self._warm is None or self._warm.closed:
            self._warm = self._open_warm()
        return self._warm

    def _open_warm(self) -> Store:
        return self.open(self.config(), migrated=True)

    def open(self, config: DatabaseConfig | None, *, migrated: bool, **overrides: Any) -> Store:
        """A new Store on ``config``; ``overrides`` replace DatabaseConfig fields."""
        assert config is not None, f"{self.name}: no config to open a Store with"
        return open_store(config.model_copy(update=overrides) if overrides else config)

    def wipe(self) -> None:
        """Delete every row the last test left; rebuild the database if that is not possible."""
        # Through the warm Store even if the test never used it: it may have written through
        # Stores of its own.
        store = self.warm_store()
        try:
            with sql_connection(store, write=True) as conn:
                for table in reversed(TABLES):  # children first
                    conn.execute(table.delete())
        except CompozyError:
            # The test changed the schema (migrated down, dropped a table): start over.
            store.close()
            self._warm = None
            self.reset()

    def close(self) -> None:
        """Close the warm Store and drop what this worker made."""
        if self._warm is not None:
            self._warm.close()
            self._warm = None


class MemoryBackend(Backend):
    """In-memory SQLite: every Store has a private copy, so a database has one Store only."""

    name = "sqlite"
    shareable = False

    def __init__(self, workdir: Path, state: KitState) -> None:
        super().__init__(workdir, state)
        self._template = MemoryTemplate()

    def config(self) -> None:
        return None

    def _open_warm(self) -> Store:
        return self._template.store()

    def open(self, config: DatabaseConfig | None, *, migrated: bool, **overrides: Any) -> Store:
        # Only the busy timeout applies to an in-memory database.
        busy_timeout = float(overrides.get("busy_timeout", 5.0))
        if migrated:
            return self._template.store(busy_timeout=busy_timeout)
        return empty_memory_store(busy_timeout=busy_timeout)

    def reset(self) -> None:
        """Nothing to do: the next warm Store is a new copy of the template."""

    def empty_database(self, tmp_path: Path) -> EmptyDatabase:
        return None, _nothing

    def _build_dataset(self, name: str, recipe: Callable[[Store], None]) -> Any:
        return self._template.dataset(recipe)

    def _copy_dataset(self, template: Any, tmp_path: Path) -> tuple[Store, Callable[[], None]]:
        store = template.store()
        return store, store.close

    def close(self) -> None:
        super().close()
        for template in self._datasets.values():
            template.close()
        self._template.close()


class SQLiteFileBackend(Backend):
    """A SQLite file per worker, copied from a migrated template file."""

    name = "sqlite-file"

    def __init__(self, workdir: Path, state: KitState) -> None:
        super().__init__(workdir, state)
        self._template = FileTemplate(workdir / "template.db")
        self._file = workdir / "worker.db"
        self._workdir = workdir

    def config(self) -> DatabaseConfig:
        if not self._file.exists():
            self._template.copy(self._file)
        return file_config(self._file)

    def reset(self) -> None:
        self._file.unlink()  # copied again by the next config()

    def empty_database(self, tmp_path: Path) -> EmptyDatabase:
        return file_config(tmp_path / "empty.db"), _nothing  # tmp_path is pytest's to clean

    def _build_dataset(self, name: str, recipe: Callable[[Store], None]) -> Any:
        path = self._workdir / f"dataset-{next(self._copies)}.db"
        self._template.copy(path)
        try:
            with open_store(file_config(path)) as store:
                recipe(store)
        except BaseException:
            path.unlink(missing_ok=True)  # the next test that asks builds it again
            raise
        return path  # closed: its WAL is checkpointed into the file, which copies whole

    def _copy_dataset(self, template: Any, tmp_path: Path) -> tuple[Store, Callable[[], None]]:
        path = tmp_path / f"dataset-copy-{next(self._copies)}.db"
        shutil.copyfile(template, path)
        store = open_store(file_config(path))
        return store, store.close


class PostgresBackend(Backend):
    """A PostgreSQL database per worker, cloned from the run's migrated template."""

    name = "postgres"
    has_server = True

    def __init__(self, workdir: Path, state: KitState) -> None:
        from compozy_testkit.provision.postgres import PostgresServer

        super().__init__(workdir, state)
        run = state.postgres
        # compozy_backend fails or skips every postgres test before it gets here without a server.
        assert run is not None
        assert not run.error
        self._server = PostgresServer(run.admin_url, run.source, run.seconds)
        self._template = run.template
        self._name = f"{run.prefix}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
        self._url = self._server.create_database(self._name, template=self._template)
        self._counter = itertools.count()

    def config(self) -> DatabaseConfig:
        return _postgres_config(self._url)

    def reset(self) -> None:
        self._server.drop_database(self._name)
        self._server.create_database(self._name, template=self._template)

    def empty_database(self, tmp_path: Path) -> EmptyDatabase:
        name = f"{self._name}_e{next(self._counter)}"
        url = self._server.create_database(name)
        return _postgres_config(url), lambda: self._server.drop_database(name)

    def _build_dataset(self, name: str, recipe: Callable[[Store], None]) -> Any:
        template = f"{self._name}_d{next(self._copies)}"
        url = self._server.create_database(template, template=self._template)
        try:
            with open_store(_postgres_config(url)) as store:
                recipe(store)
        except BaseException:
            self._server.drop_database(template)  # the next test that asks builds it again
            raise
        return template  # no session left on it, so CREATE DATABASE can copy it

    def _copy_dataset(self, template: Any, tmp_path: Path) -> tuple[Store, Callable[[], None]]:
        name = f"{self._name}_dc{next(self._copies)}"
        store = open_store(_postgres_config(self._server.create_database(name, template=template)))

        def drop() -> None:
            store.close()
            self._server.drop_database(name)

        return store, drop

    def close(self) -> None:
        super().close()
        for template in self._datasets.values():
            self._server.drop_database(template)
        self._server.drop_database(self._name)


def _postgres_config(url: str) -> DatabaseConfig:
    return DatabaseConfig(driver="postgres", conn_string=url, auto_migrate=False)


BACKEND_CLASSES: dict[str, type[Backend]] = {
    cls.name: cls for cls in (MemoryBackend, SQLiteFileBackend, PostgresBackend)
}
"""Each backend name and its class."""
# The plugin lists the names without importing this module (it loads without compozy).
assert tuple(BACKEND_CLASSES) == BACKENDS, "compozy_testkit.session.BACKENDS is out of step"


class WorkerDatabases:
    """This worker's backends, each set up when a test first needs it."""

    def __init__(self, workdir: Path, state: KitState) -> None:
        self._workdir = workdir
        self._state = state
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        """The worker's backend called ``name``."""
        backend = self._backends.get(name)
        if backend is None:
            backend = BACKEND_CLASSES[name](self._workdir, self._state)
            self._backends[name] = backend
        return backend

    def close(self) -> None:
        """Close the warm Stores, drop the templates and the worker's databases."""
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()


class TestDatabase(ClosedOnExit):
    """A clean database for one test; ``open()`` gives Stores on it, closed at teardown.

    Migrated: the worker's database, wiped at teardown. Else a new empty database (a file in
    ``tmp_path`` on SQLite), dropped at teardown.
    """

    __test__ = False  # not a test class, whatever pytest's collection patterns say

    def __init__(self, backend: Backend, tmp_path: Path | None, *, migrated: bool = True) -> None:
        self._backend = backend
        self.backend = backend.name
        self.migrated = migrated
        self._opened: list[Store] = []  # closed at teardown
        self._handed: list[Store] = []  # every Store given to the test, warm one included
        self.config: DatabaseConfig | None
        if migrated:
            self.config, self._cleanup = backend.config(), backend.wipe
        else:
            assert tmp_path is not None, "an empty database needs a folder (tmp_path)"
            self.config, self._cleanup = backend.empty_database(tmp_path)

    @property
    def shareable(self) -> bool:
        """False for in-memory SQLite, which only its one Store can see."""
        return self._backend.shareable

    def open(self, **overrides: Any) -> Store:
        """A Store on this database; ``overrides`` replace DatabaseConfig fields."""
        if self.migrated and not overrides and not self._handed:
            store = self._backend.warm_store()
        elif self._handed and not self.shareable:
            raise RuntimeError(f"a {self.backend} database is private to its one Store")
        else:
            store = self._backend.open(self.config, migrated=self.migrated, **overrides)
            self._opened.append(store)
        self._handed.append(store)
        return store

    def wipe(self) -> None:
        """Delete every row of a migrated database (as after a test), keeping its Stores."""
        assert self.migrated, "wipe() is for migrated databases"
        self._backend.wipe()

    def store(self) -> Store:
        """The test's main Store (the first one opened)."""
        return self._handed[0] if self._handed else self.open()

    def close(self) -> None:
        """Close the Stores the test opened, then leave the database clean for the next test."""
        for store in self._opened:
            store.close()
        self._opened.clear()
        self._cleanup()

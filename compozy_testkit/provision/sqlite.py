"""SQLite templates for tests: migrated once per worker, copied wherever a database is needed.

Copying is far cheaper than migrating (measured here: about 13 us for an in-memory
``backup()`` and 180 us for a file copy, against about 5 ms for a migration run). The copies
seed each worker's database and the Stores tests open with their own settings; tests are then
isolated by deleting rows (see ``compozy_testkit.databases``).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from compozy.config import DatabaseConfig
from compozy.store import Store, open_sqlite_connection, open_store


class MemoryTemplate:
    """A migrated in-memory database; each Store gets a private copy of it."""

    def __init__(self) -> None:
        self._connection = sqlite3.connect(":memory:", check_same_thread=False)
        # The Store migrates the template connection and keeps it open until close().
        self._store = open_sqlite_connection(self._connection, auto_migrate=True)

    def store(self, *, busy_timeout: float = 5.0) -> Store:
        """A Store over a private in-memory copy of the migrated template."""
        return open_sqlite_connection(_copy(self._connection), busy_timeout=busy_timeout)

    def dataset(self, recipe: Callable[[Store], None]) -> MemoryDataset:
        """A copy of the template filled by ``recipe``, to be copied in turn."""
        return MemoryDataset(_copy(self._connection), recipe)

    def close(self) -> None:
        """Drop the template."""
        self._store.close()


class MemoryDataset:
    """An in-memory database filled once by a recipe; each Store gets a private copy of it."""

    def __init__(self, connection: sqlite3.Connection, recipe: Callable[[Store], None]) -> None:
        self._connection = connection
        self._store = open_sqlite_connection(connection)
        try:
            recipe(self._store)
        except BaseException:
            self._store.close()
            raise

    def store(self) -> Store:
        """A Store over a private in-memory copy of the filled database."""
        return open_sqlite_connection(_copy(self._connection))

    def close(self) -> None:
        """Drop the filled database."""
        self._store.close()


def _copy(connection: sqlite3.Connection) -> sqlite3.Connection:
    clone = sqlite3.connect(":memory:", check_same_thread=False)
    connection.backup(clone)
    return clone


def empty_memory_store(*, busy_timeout: float = 5.0) -> Store:
    """A Store over a new in-memory database with no schema."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    return open_sqlite_connection(connection, busy_timeout=busy_timeout)


class FileTemplate:
    """A migrated SQLite file at ``path``, made here, copied by ``copy()``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        open_store(file_config(path, auto_migrate=True)).close()

    def copy(self, path: Path) -> None:
        """Put a copy of the migrated template at ``path``."""
        shutil.copyfile(self._path, path)


def file_config(path: Path, *, auto_migrate: bool = False) -> DatabaseConfig:
    """Config for a SQLite file."""
    return DatabaseConfig(driver="sqlite", path=str(path), auto_migrate=auto_migrate)

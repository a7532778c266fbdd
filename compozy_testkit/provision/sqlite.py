"""SQLite templates for tests: migrated once per run, copied wherever a database is needed.

Copying is far cheaper than migrating (measured here: about 13 us for an in-memory
``backup()`` and 180 us for a file copy, against about 5 ms for a migration run). The copies
seed each worker's database and the Stores tests open with their own settings; tests are then
isolated by deleting rows (see ``compozy_testkit.databases``).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from compozy.config import DatabaseConfig
from compozy.store import Store, open_sqlite_connection, open_store


class SQLiteTemplates:
    """A migrated in-memory template and a migrated template file, made on first use."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._memory: sqlite3.Connection | None = None
        self._memory_store: Store | None = None
        self._file: Path | None = None

    def memory_store(self, *, busy_timeout: float = 5.0) -> Store:
        """A Store over a private in-memory copy of the migrated template."""
        if self._memory is None:
            self._memory = sqlite3.connect(":memory:", check_same_thread=False)
            # The Store migrates the template connection and keeps it open until close().
            self._memory_store = open_sqlite_connection(self._memory, auto_migrate=True)
        clone = sqlite3.connect(":memory:", check_same_thread=False)
        self._memory.backup(clone)
        return open_sqlite_connection(clone, busy_timeout=busy_timeout)

    def copy_file(self, path: Path) -> None:
        """Put a copy of the migrated template file at ``path``."""
        if self._file is None:
            self._file = self._workdir / "template.db"
            open_store(file_config(self._file, auto_migrate=True)).close()
        shutil.copyfile(self._file, path)

    def close(self) -> None:
        """Drop the templates."""
        if self._memory_store is not None:
            self._memory_store.close()
        self._memory = self._memory_store = None


def file_config(path: Path, *, auto_migrate: bool = False) -> DatabaseConfig:
    """Config for a SQLite file."""
    return DatabaseConfig(driver="sqlite", path=str(path), auto_migrate=auto_migrate)

"""The store: repositories for workflows, tasks and auth on PostgreSQL or SQLite.

This is the only package that imports SQLAlchemy. ``open_store(config)`` builds the driver that
``config.driver`` names (``DRIVERS``); everything else is the same code for both databases.
docs/architecture.md describes the layers, the driver and the unit of work.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from compozy.config import DatabaseConfig
from compozy.core.closing import ClosedOnExit
from compozy.errors import CompozyError, ConfigError
from compozy.repositories import RepositoryStore
from compozy.store import migrations
from compozy.store.database import Database
from compozy.store.drivers.base import Driver
from compozy.store.drivers.sqlite import SQLiteDriver
from compozy.store.repos.auth import SqlAuthRepository
from compozy.store.repos.queue import SqlExecutionQueue
from compozy.store.repos.task import SqlTaskRepository
from compozy.store.repos.workflow import SqlWorkflowRepository

T = TypeVar("T")

__all__ = [
    "DRIVERS",
    "Store",
    "StoreHealth",
    "TransactionScope",
    "open_sqlite_connection",
    "open_store",
    "sql_connection",
]


@dataclass(frozen=True)
class StoreHealth:
    """What ``Store.health()`` found."""

    ok: bool
    driver: str
    location: str
    revision: str | None
    head: str
    detail: str = ""


class TransactionScope:
    """The repositories (and the execution queue) bound to one transaction."""

    def __init__(self, db: Database, conn: sa.Connection) -> None:
        self.workflows = SqlWorkflowRepository(db, conn)
        self.tasks = SqlTaskRepository(db, conn)
        self.auth = SqlAuthRepository(db, conn)
        self.queue = SqlExecutionQueue(db, conn)


class Store(ClosedOnExit):
    """Repositories over one database; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.workflows = SqlWorkflowRepository(db)
        self.tasks = SqlTaskRepository(db)
        self.auth = SqlAuthRepository(db)
        self.queue = SqlExecutionQueue(db)

    @property
    def driver(self) -> str:
        """The driver's name, as ``database.driver`` spells it: ``postgres`` or ``sqlite``."""
        return self._db.driver.name

    @property
    def location(self) -> str:
        """Where the database is: a path, ``in-memory`` or ``host:port/name`` (no password)."""
        return self._db.driver.location

    def describe(self) -> str:
        """The driver and the location, for messages: ``sqlite /srv/compozy.db``."""
        return self._db.driver.describe()

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._db.closed

    def files(self) -> list[Path]:
        """The files that make up the database on this machine (none for a server)."""
        return self._db.driver.files()

    def backup(self, dest: Path) -> None:
        """Copy the database, consistent and online, to the new file ``dest`` (SQLite only;
        ``ValidationError`` otherwise). ``compozy.transfer.backup`` makes the file safely."""
        with self._db.translate():
            self._db.driver.backup(self._db.engine, dest)

    @contextmanager
    def transaction(self) -> Iterator[TransactionScope]:
        """Commit on normal exit, roll back on exception; nested calls open savepoints."""
        with self._db.transaction() as conn:
            yield TransactionScope(self._db, conn)

    def run_in_transaction(self, work: Callable[[TransactionScope], T]) -> T:
        """Run ``work(tx)`` in one transaction and return its result, retrying the whole
        transaction (bounded, with jittered backoff) when it loses a transient conflict:
        a deadlock or serialization failure on PostgreSQL, a busy database on SQLite.

        ``work`` must be safe to run again: keep calls to the outside world (a tool, an HTTP
        request) out of it. Inside ``store.transaction()`` it joins that transaction and is
        not retried on its own.
        """
        return self._db.run_in_transaction(lambda conn: work(TransactionScope(self._db, conn)))

    def health(self) -> StoreHealth:
        """Connect and read the schema revision; an unreachable database is reported, not raised."""
        head = migrations.revisions()[-1]
        try:
            with self._db.connect(write=False) as conn:
                revision = migrations.current_revision(conn)
        except CompozyError as exc:
            return StoreHealth(False, self.driver, self.location, None, head, str(exc))
        detail = "" if revision == head else f"schema at {revision}, head is {head}"
        return StoreHealth(revision == head, self.driver, self.location, revision, head, detail)

    def close(self) -> None:
        """Release every connection (an in-memory database is gone afterwards)."""
        self._db.close()

    def __repr__(self) -> str:
        return f"<Store {self.describe()}>"


DRIVERS: Mapping[str, Callable[[], type[Driver]]] = MappingProxyType(
    {
        "sqlite": lambda: SQLiteDriver,
        # psycopg is imported only when a PostgreSQL store is opened.
        "postgres": lambda: (
            importlib.import_module("compozy.store.drivers.postgres").PostgresDriver
        ),
    }
)
"""``database.driver`` -> its driver class; every driver is built from the DatabaseConfig."""


def _open(driver: Driver, *, auto_migrate: bool) -> Store:
    store = Store(Database(driver))
    if auto_migrate:
        try:
            migrations.upgrade(store)
        except BaseException:
            store.close()
            raise
    return store


def open_store(config: DatabaseConfig) -> Store:
    """Open the database ``config`` describes; migrate it to the head if ``auto_migrate``."""
    driver_class = DRIVERS.get(config.driver)
    if driver_class is None:  # pragma: no cover - DatabaseConfig refuses other drivers
        raise ConfigError(
            f"database.driver {config.driver!r} is not one of {', '.join(sorted(DRIVERS))}"
        )
    return _open(driver_class()(config), auto_migrate=config.auto_migrate)


def open_sqlite_connection(
    connection: sqlite3.Connection, *, busy_timeout: float = 5.0, auto_migrate: bool = False
) -> Store:
    """A Store over an already-open in-memory ``sqlite3`` connection, which it takes over.

    For test kits that clone a migrated template with ``sqlite3.Connection.backup``; the
    connection must allow use from other threads (``check_same_thread=False``).
    """
    return _open(SQLiteDriver.over_connection(connection, busy_timeout), auto_migrate=auto_migrate)


@contextmanager
def sql_connection(store: Store, *, write: bool = False) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection to the store's database, in a transaction of its own (committed
    on exit). For checks of compozy's own schema and for test kits that wipe rows; not part of
    the repository protocol, and never needed to use a store."""
    with store._db.connect(write=write) as conn:
        yield conn


if TYPE_CHECKING:  # Store implements the protocols that the contract suite tests

    def _is_a_repository_store(store: Store) -> RepositoryStore:
        return store

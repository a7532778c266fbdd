"""Schema migrations: Alembic, one linear history, SQL written per database.

``upgrade``, ``downgrade`` and ``status`` take a Store and run on its own engine (so an in-memory
database migrates the database the Store uses), in one transaction that the store's driver runs
(``Driver.migration``): SQLite runs it as ``BEGIN IMMEDIATE`` with foreign keys off and checks
them before committing; PostgreSQL takes an advisory lock first, so two processes migrating at
once run one after the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from compozy import __version__
from compozy.errors import CompozyError, ValidationError
from compozy.store.database import Database

if TYPE_CHECKING:
    from compozy.store import Store
from compozy.store.drivers.base import WRITE_OPTION

__all__ = [
    "MigrationStatus",
    "Migrator",
    "downgrade",
    "revisions",
    "status",
    "transaction",
    "upgrade",
]

SCRIPT_LOCATION = Path(__file__).parent


@dataclass(frozen=True)
class MigrationStatus:
    """Where a database stands in the migration history."""

    current: str | None
    head: str
    applied: list[str]
    pending: list[str]

    @property
    def up_to_date(self) -> bool:
        """True when the database is at the head revision."""
        return self.current == self.head


def _config(conn: Connection | None = None, driver: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = conn
    config.attributes["driver"] = driver  # which SQL file each revision runs (sqlfile.py)
    return config


@functools.cache
def _history() -> tuple[tuple[str, ...], tuple[str, ...]]:
    # The revision files ship inside the package and never change while it runs; reading them
    # once keeps `status` and `Store.health()` (GET /health) from parsing them on every call.
    script = ScriptDirectory.from_config(_config())
    order = tuple(rev.revision for rev in reversed(list(script.walk_revisions())))
    return order, tuple(script.get_heads())


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    return list(_history()[0])


def _head() -> str:
    heads = _history()[1]
    if len(heads) != 1:
        raise CompozyError(f"the migration history has {len(heads)} heads; it must be linear")
    return heads[0]


def _current(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


def _check_current(current: str | None) -> None:
    """``CompozyError`` for a database migrated past what this compozy knows, before Alembic
    says "Can't locate revision": which revision the database is at, which this compozy knows
    up to, and what to do."""
    order = revisions()
    if current is not None and current not in order:
        raise CompozyError(
            f"the database is at revision {current}, but this compozy ({__version__}) knows "
            f"revisions up to {order[-1]}: a newer compozy migrated it; upgrade compozy "
            "(pip install --upgrade compozy) to use this database"
        )


def _status_of(current: str | None) -> MigrationStatus:
    order = revisions()
    _check_current(current)
    done = order.index(current) + 1 if current is not None else 0
    return MigrationStatus(
        current=current, head=_head(), applied=order[:done], pending=order[done:]
    )


@contextmanager
def _migrating(db: Database) -> Iterator[Connection]:
    with db.driver.guard(write=True), db.translate(), db.engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with db.driver.migration(conn):
            yield conn


class Migrator:
    """A migration transaction that more work joins (``transaction``): moves the schema and
    hands its connection to the work, which commits or rolls back with it."""

    def __init__(self, conn: Connection, driver: str) -> None:
        self.connection = conn
        self._driver = driver

    @property
    def current(self) -> str | None:
        """The revision the database is at now, inside this transaction."""
        return current_revision(self.connection)

    def move_to(self, revision: str) -> None:
        """Upgrade or downgrade to ``revision`` (a known revision id)."""
        _check_known(revision)
        order = revisions()
        current = self.current
        _check_current(current)
        config = _config(self.connection, self._driver)
        try:
            if current is None or order.index(current) < order.index(revision):
                command.upgrade(config, revision)
            elif current != revision:
                command.downgrade(config, revision)
        except CommandError as exc:
            raise ValidationError(f"cannot migrate: {exc}") from None


@contextmanager
def transaction(store: Store) -> Iterator[Migrator]:
    """One migration transaction on ``store``'s database (the driver's migration mode: on
    SQLite foreign keys are off and checked before commit; on PostgreSQL an advisory lock is
    held); committed when the block ends, rolled back if it raises."""
    db = store._db
    with _migrating(db) as conn:
        yield Migrator(conn, db.driver.name)


def _run(store: Store, action: Callable[[Config, Connection], None]) -> MigrationStatus:
    db = store._db
    with _migrating(db) as conn:
        _check_current(current_revision(conn))
        try:
            action(_config(conn, db.driver.name), conn)
        except CommandError as exc:
            raise ValidationError(f"cannot migrate: {exc}") from None
        return _status_of(_current(conn))


def upgrade(store: Store, to: str = "head") -> MigrationStatus:
    """Apply revisions up to ``to`` (default: the head)."""
    _check_known(to)
    return _run(store, lambda config, _conn: command.upgrade(config, to))


def downgrade(store: Store, to: str | None = None, steps: int | None = None) -> MigrationStatus:
    """Revert to revision ``to`` (``base`` for an empty schema), or revert ``steps`` revisions."""
    if (to is None) == (steps is None):
        raise ValidationError("migrate down needs exactly one of --to REV or --steps N")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValidationError(f"--steps is {steps!r}; pass a whole number of revisions, 1 or more")

    def action(config: Config, conn: Connection) -> None:
        if to is not None:
            _check_known(to)
            command.downgrade(config, to)
            return
        assert steps is not None
        applied = _status_of(_current(conn)).applied
        if steps > len(applied):
            raise ValidationError(
                f"--steps {steps} is more than the {len(applied)} applied revisions"
            )
        target = applied[-steps - 1] if steps < len(applied) else "base"
        command.downgrade(config, target)

    return _run(store, action)


def status(store: Store) -> MigrationStatus:
    """The current revision, the head and what is applied and pending."""
    with store._db.connect(write=False) as conn:
        return _status_of(_current(conn))


def _check_known(target: str) -> None:
    if target not in ("head", "base") and target not in revisions():
        known = ", ".join(["base", *revisions(), "head"])
        raise ValidationError(f"unknown revision {target!r}; known revisions: {known}")


def current_revision(conn: Connection) -> str | None:
    """The revision a connection's database is at (None before the first migration)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return _current(conn)

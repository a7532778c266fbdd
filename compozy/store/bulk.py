"""Whole tables out and in, for ``compozy.transfer`` (``compozy export`` and ``import``).

``snapshot(store)`` reads every table in one read-only transaction that sees one snapshot
(REPEATABLE READ on PostgreSQL, one read transaction on SQLite), parents before children, in
batches through a server-side cursor, so memory stays flat whatever the size.

``load(store, ...)`` writes in one migration transaction: it empties the target (``replace``),
moves an empty target to the export's schema revision, inserts batches and checks every
reference itself (SQLite's foreign keys are off while migrating), and commits only when the
caller's block ends without an error. Values are Python values as the repositories use them:
``datetime`` for timestamps, ``bytes``, JSON documents; ``compozy.transfer`` turns them into text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compozy.errors import CompozyError, StoreBusy, StoreUnavailable, ValidationError
from compozy.store import migrations
from compozy.store.database import Database
from compozy.store.drivers.base import UniqueViolation, iter_batches
from compozy.store.tables import metadata
from compozy.store.types import Identifier, JSONValue, UTCDateTime

if TYPE_CHECKING:
    from compozy.store import Store

__all__ = ["BATCH_SIZE", "TABLE_ORDER", "Column", "Loader", "Snapshot", "load", "snapshot"]

TABLE_ORDER = ("users", "api_keys", "workflow_states", "task_states")
"""Every table, each after the tables it references."""
BATCH_SIZE = 500
"""Rows per fetch and per insert."""


@dataclass(frozen=True)
class Column:
    """A column as the transfer format sees it."""

    name: str
    kind: str
    """``id``, ``text``, ``int``, ``timestamp``, ``bytes`` or ``json``."""
    nullable: bool


def _kind(column: sa.Column[Any]) -> str:
    kinds: tuple[tuple[type[Any], str], ...] = (
        (Identifier, "id"),
        (UTCDateTime, "timestamp"),
        (JSONValue, "json"),
        (sa.LargeBinary, "bytes"),
        (sa.Integer, "int"),
        (sa.Text, "text"),
    )
    for type_, kind in kinds:
        if isinstance(column.type, type_):
            return kind
    raise AssertionError(f"no transfer kind for {column}")  # pragma: no cover


def _columns(conn: Connection, table: str) -> tuple[Column, ...]:
    """The table's columns in the database as it is now (an older revision has fewer)."""
    known = metadata.tables[table].c
    found = []
    for reflected in sa.inspect(conn).get_columns(table):
        name = reflected["name"]
        if name not in known:
            raise CompozyError(
                f"table {table} has a column {name} that this version of compozy does not know"
            )
        found.append(Column(name, _kind(known[name]), bool(known[name].nullable)))
    return tuple(found)


def _count(conn: Connection, table: str) -> int:
    return int(conn.scalar(sa.select(sa.func.count()).select_from(metadata.tables[table])) or 0)


def _ordered(table: str, columns: Sequence[Column]) -> sa.Select[Any]:
    t = metadata.tables[table]
    selected = [t.c[c.name] for c in columns]
    key = t.primary_key.columns.values()[0]
    if table != "task_states":
        return sa.select(*selected).order_by(key)
    # A task's parent is in the same table and PostgreSQL's foreign keys are not deferrable:
    # rows come by depth in their tree (top-level tasks first), then by id.
    child = t.alias("child")
    tree = (
        sa.select(t.c.task_exec_id, sa.literal(0).label("depth"))
        .where(t.c.parent_state_id.is_(None))
        .cte("tree", recursive=True)
    )
    tree = tree.union_all(
        sa.select(child.c.task_exec_id, tree.c.depth + 1).join(
            tree, child.c.parent_state_id == tree.c.task_exec_id
        )
    )
    return (
        sa.select(*selected)
        .join(tree, tree.c.task_exec_id == t.c.task_exec_id)
        .order_by(tree.c.depth, t.c.task_exec_id)
    )


class Snapshot:
    """Every table of one database at one moment (``snapshot``)."""

    def __init__(self, conn: Connection, revision: str) -> None:
        self._conn = conn
        self.revision = revision
        """The schema revision the database is at."""
        self.columns = {table: _columns(conn, table) for table in TABLE_ORDER}
        """Each table's columns, in the database's order."""
        self.counts = {table: _count(conn, table) for table in TABLE_ORDER}
        """Rows per table in the snapshot."""

    def rows(self, table: str) -> Iterator[list[dict[str, Any]]]:
        """The table's rows in batches, parents first, in key order."""
        stmt = _ordered(table, self.columns[table])
        result = self._conn.execution_options(yield_per=BATCH_SIZE).execute(stmt)
        sent = 0
        for part in result.mappings().partitions():
            sent += len(part)
            yield [dict(row) for row in part]
        if sent != self.counts[table]:
            # Only task_states can lose rows this way: a parent chain that never reaches a
            # top-level task.
            raise CompozyError(
                f"{table} holds {self.counts[table] - sent} rows whose parent_state_id chain "
                "loops back on itself instead of reaching a top-level task; repair them first"
            )


@contextmanager
def snapshot(store: Store) -> Iterator[Snapshot]:
    """A read-only transaction on ``store``'s database that sees one snapshot of it."""
    db: Database = store._db
    with (
        db.driver.guard(write=False),
        db.translate(),
        db.engine.connect().execution_options(**db.driver.snapshot_options) as conn,
        conn.begin(),
    ):
        revision = migrations.current_revision(conn)
        if revision is None:
            raise ValidationError(
                f"{db.driver.describe()} has no compozy schema, so there is nothing to export"
            )
        yield Snapshot(conn, revision)


class Loader:
    """Inserts into the tables of one import transaction (``load``)."""

    def __init__(self, db: Database, conn: Connection) -> None:
        self._db = db
        self._conn = conn
        self.columns = {table: _columns(conn, table) for table in TABLE_ORDER}
        """Each table's columns in the target, after it was moved to the export's revision."""

    def insert(self, table: str, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Insert ``rows`` (each with the line it came from) after everything inserted before.

        A row that is refused, or that names a parent or owner missing from what came before
        it, raises ``ValidationError`` naming its line; the transaction must then be abandoned.
        """
        if not rows:
            return
        self._check_references(table, rows)
        try:
            with self._db.translate(), self._conn.begin_nested():
                self._conn.execute(sa.insert(metadata.tables[table]), [row for _, row in rows])
        except (StoreBusy, StoreUnavailable):
            raise  # the database, not a row: nothing to look for
        except CompozyError:
            for line, row in rows:  # find the row, each in a savepoint of its own
                self._insert_one(table, line, row)
            raise

    def _insert_one(self, table: str, line: int, row: Mapping[str, Any]) -> None:
        try:
            with self._db.translate(), self._conn.begin_nested():
                self._conn.execute(sa.insert(metadata.tables[table]), [row])
        except UniqueViolation as error:
            taken = _constraint_columns(table, error.constraint)
            shown = ", ".join(f"{name} {row.get(name)!r}" for name in taken) or str(error)
            raise ValidationError(
                f"line {line} ({table}): {shown} is already taken by an earlier row "
                f"({error.constraint}); each must be unique"
            ) from None
        except CompozyError as error:
            raise ValidationError(
                f"line {line} ({table}): the target refused the row: {error}"
            ) from None

    def _check_references(self, table: str, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Every reference of ``rows`` names a row stored before or an earlier row of the batch:
        the same rule on both databases, whether or not their foreign keys are on."""
        t = metadata.tables[table]
        (key,) = t.primary_key.columns
        taken = self._existing(key, {row[key.name] for _, row in rows})
        for line, row in rows:
            if row[key.name] in taken:
                raise ValidationError(
                    f"line {line} ({table}): {key.name} {row[key.name]!r} is already taken by an "
                    "earlier row; ids must be unique"
                )
            taken.add(row[key.name])
        for fk in t.foreign_key_constraints:
            (column,) = fk.column_keys
            referred = fk.elements[0].column
            found = self._existing(
                referred, {row[column] for _, row in rows if row.get(column) is not None}
            )
            for line, row in rows:
                value = row.get(column)
                if value is not None and value not in found:
                    raise ValidationError(
                        f"line {line} ({table}): {column} {value!r} names a "
                        f"{referred.table.name} row that is not in the file before this line"
                    )
                if referred.table is t:  # a parent earlier in this batch
                    found.add(row[referred.name])

    def _existing(self, column: sa.Column[Any], values: set[Any]) -> set[Any]:
        """Which of ``values`` the column holds already."""
        found: set[Any] = set()
        with self._db.translate():
            for part in iter_batches(sorted(values), self._db.driver.max_bind_params):
                found.update(self._conn.scalars(sa.select(column).where(column.in_(part))))
        return found

    def count(self, table: str) -> int:
        """Rows in ``table`` now, inside the transaction."""
        with self._db.translate():
            return _count(self._conn, table)


class _DryRun(Exception):
    """Rolls back the import transaction of a dry run."""


@contextmanager
def load(store: Store, *, revision: str, replace: bool, commit: bool = True) -> Iterator[Loader]:
    """One transaction that prepares ``store``'s database for rows of schema ``revision``.

    A target holding rows is refused unless ``replace``, which empties it in the same
    transaction and then needs the target at ``revision`` already; an empty target is moved
    to ``revision``. The block's inserts commit with it when it ends without an error (never,
    with ``commit=False``: a dry run).
    """
    try:
        with migrations.transaction(store) as migrator:
            conn = migrator.connection
            current = migrator.current
            held = _held(conn, current)
            if held:
                _check_replaceable(store, held, current, revision, replace)
                for table in reversed(TABLE_ORDER):  # children first; no cascades while off
                    conn.execute(metadata.tables[table].delete())
            migrator.move_to(revision)
            yield Loader(store._db, conn)
            if not commit:
                raise _DryRun
    except _DryRun:
        pass


def _held(conn: Connection, current: str | None) -> dict[str, int]:
    if current is None:
        return {}
    present = set(sa.inspect(conn).get_table_names())
    counts = {t: _count(conn, t) for t in TABLE_ORDER if t in present}
    return {t: n for t, n in counts.items() if n}


def _check_replaceable(
    store: Store, held: dict[str, int], current: str | None, revision: str, replace: bool
) -> None:
    what = ", ".join(f"{table}: {n}" for table, n in held.items())
    if not replace:
        raise ValidationError(
            f"{store.describe()} already holds rows ({what}); import into an empty database, "
            "or pass --replace to delete them in the same transaction"
        )
    if current == revision:
        return
    order = migrations.revisions()
    assert current is not None
    if order.index(current) < order.index(revision):
        raise ValidationError(
            f"{store.describe()} is at schema revision {current} and the export at {revision}: "
            "upgrade the target first (`compozy migrate up` with the target's config), then import"
        )
    raise ValidationError(
        f"{store.describe()} is at schema revision {current}, newer than the export's "
        f"{revision}: upgrade the source (`compozy migrate up` with the source's config) and "
        "export again"
    )


def _constraint_columns(table: str, name: str | None) -> list[str]:
    for constraint in metadata.tables[table].constraints:
        if constraint.name == name and isinstance(
            constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint
        ):
            return [c.name for c in constraint.columns]
    return []

"""What a migration down would delete: the tables it drops and the rows they hold, and the
columns it drops from the tables it keeps and the values they hold.

``compozy migrate down`` shows this and asks before it runs a down that loses rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from compozy.config import MEMORY_PATH, DatabaseConfig
from compozy.store import Store, migrations, open_store, sql_connection

__all__ = ["Dropped", "data_dropped"]


def _schema_at(revision: str | None) -> dict[str, set[str]]:
    """compozy's tables at ``revision`` (None: none) and their columns, read from a scratch
    in-memory database migrated there: both databases have the same tables and columns at
    every revision (the migration contract checks it), so the database being migrated is not
    touched."""
    if revision is None:
        return {}
    scratch = open_store(DatabaseConfig(driver="sqlite", path=MEMORY_PATH, auto_migrate=False))
    try:
        migrations.upgrade(scratch, revision)
        with sql_connection(scratch) as conn:
            inspector = sa.inspect(conn)
            return {
                table: {c["name"] for c in inspector.get_columns(table)}
                for table in inspector.get_table_names()
                if table != "alembic_version"
            }
    finally:
        scratch.close()


@dataclass(frozen=True)
class Dropped:
    """What a migration down would delete from a database."""

    rows: dict[str, int]
    """Each table it drops, with the rows the table holds now."""
    values: dict[str, int]
    """Each column it drops from a table it keeps (``table.column``), with the values (not
    NULL) it holds now; only columns that hold any."""


def data_dropped(store: Store, current: str | None, target: str | None) -> Dropped:
    """What going back from revision ``current`` to ``target`` (None: base) deletes from
    ``store``'s database."""
    before, after = _schema_at(current), _schema_at(target)
    rows: dict[str, int] = {}
    values: dict[str, int] = {}
    with sql_connection(store) as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in sorted((before.keys() - after.keys()) & present):
            rows[table] = int(
                conn.scalar(sa.select(sa.func.count()).select_from(sa.table(table))) or 0
            )
        for table in sorted(before.keys() & after.keys()):
            for column in sorted(before[table] - after[table]):
                held = sa.select(sa.func.count(sa.column(column))).select_from(sa.table(table))
                n = int(conn.scalar(held) or 0)
                if n:
                    values[f"{table}.{column}"] = n
    return Dropped(rows, values)

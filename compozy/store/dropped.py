"""What a migration down would delete: the tables it drops and the rows they hold, and the
columns it drops from the tables it keeps and the values they hold.

``compozy migrate down`` shows this and asks before it runs a down that loses rows.
"""

from __future__ import annotations

import sqlalchemy as sa

from compozy.config import MEMORY_PATH, DatabaseConfig
from compozy.store import Store, migrations, open_store, sql_connection

__all__ = ["rows_dropped", "values_dropped"]


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


def _tables_at(revision: str | None) -> set[str]:
    return set(_schema_at(revision))


def rows_dropped(store: Store, current: str | None, target: str | None) -> dict[str, int]:
    """The tables that going back from revision ``current`` to ``target`` (None: base) drops
    from ``store``'s database, by name, with the number of rows each holds now."""
    dropping = _tables_at(current) - _tables_at(target)
    with sql_connection(store) as conn:
        present = set(sa.inspect(conn).get_table_names())
        return {
            name: int(conn.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0)
            for name in sorted(dropping & present)
        }


def values_dropped(store: Store, current: str | None, target: str | None) -> dict[str, int]:
    """The columns that going back from ``current`` to ``target`` drops from tables it keeps,
    as ``table.column``, with the number of values (not NULL) each holds now."""
    before, after = _schema_at(current), _schema_at(target)
    counts: dict[str, int] = {}
    with sql_connection(store) as conn:
        for table in sorted(before.keys() & after.keys()):
            for column in sorted(before[table] - after[table]):
                held = sa.select(sa.func.count(sa.column(column))).select_from(sa.table(table))
                counts[f"{table}.{column}"] = int(conn.scalar(held) or 0)
    return {name: n for name, n in counts.items() if n}

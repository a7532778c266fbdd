"""What a migration down would delete: the tables it drops and the rows they hold.

``compozy migrate down`` shows this and asks before it runs a down that loses rows.
"""

from __future__ import annotations

import sqlalchemy as sa

from compozy.config import MEMORY_PATH, DatabaseConfig
from compozy.store import Store, migrations, open_store, sql_connection

__all__ = ["rows_dropped"]


def _tables_at(revision: str | None) -> set[str]:
    """compozy's tables at ``revision`` (None: none), read from a scratch in-memory database
    migrated there: both databases have the same tables at every revision (the migration
    contract checks it), so the database being migrated is not touched."""
    if revision is None:
        return set()
    scratch = open_store(DatabaseConfig(driver="sqlite", path=MEMORY_PATH, auto_migrate=False))
    try:
        migrations.upgrade(scratch, revision)
        with sql_connection(scratch) as conn:
            return set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        scratch.close()


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

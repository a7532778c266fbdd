"""The SQL a Store sends, recorded for test kits' query budgets (``compozy_queries``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from compozy.store import Store

__all__ = ["record_statements"]


@contextmanager
def record_statements(store: Store) -> Iterator[list[str]]:
    """Every statement ``store`` sends to its database while the block runs, in order, as the
    SQL text the driver receives (transaction control included: BEGIN on SQLite, SAVEPOINT),
    whether SQLAlchemy runs it or the store runs it on the driver connection itself."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    engine = store._db.engine
    recorders = store._db.recorders  # statements the store runs on the driver connection
    event.listen(engine, "before_cursor_execute", record)
    recorders.append(statements.append)
    try:
        yield statements
    finally:
        recorders.remove(statements.append)
        event.remove(engine, "before_cursor_execute", record)

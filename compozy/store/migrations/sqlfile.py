"""Run one section of a revision's SQL file for the dialect being migrated.

Every revision ships ``sql/<rev>.postgres.sql`` and ``sql/<rev>.sqlite.sql``, each with a
``-- migrate:up`` and a ``-- migrate:down`` section, so each database gets SQL written for it
while Alembic keeps one linear history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).parent / "sql"
_MARKERS = {"up": "-- migrate:up", "down": "-- migrate:down"}


def sql_path(revision: str, driver: str) -> Path:
    """The SQL file of ``revision`` for a driver (``postgres`` or ``sqlite``)."""
    return SQL_DIR / f"{revision}.{driver}.sql"


def read_section(path: Path, section: str) -> str:
    """The text of the ``up`` or ``down`` section of a SQL file."""
    text = path.read_text(encoding="utf-8")
    start_marker = _MARKERS[section]
    if start_marker not in text:
        raise ValueError(f"{path} has no '{start_marker}' line")
    body = text.split(start_marker, 1)[1]
    for marker in _MARKERS.values():
        if marker != start_marker and marker in body:
            body = body.split(marker, 1)[0]
    return body


def split_statements(sql: str) -> list[str]:
    """Split SQL on semicolons that are outside quotes and comments; drop empty statements."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(sql):
        char = sql[i]
        if quote is not None:
            current.append(char)
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
            current.append(char)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end == -1 else end
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def run_section(revision: str, section: str) -> None:
    """Execute a revision's ``up`` or ``down`` SQL on the connection being migrated."""
    bind = op.get_bind()
    config = op.get_context().config
    assert config is not None  # compozy.store.migrations configures every run
    driver = config.attributes["driver"]
    for statement in split_statements(read_section(sql_path(revision, driver), section)):
        bind.exec_driver_sql(statement)


def sql_revision(revision: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """The ``upgrade`` and ``downgrade`` functions of a revision that runs its SQL files.

    A revision module binds them as module attributes, where Alembic looks for them:
    ``upgrade, downgrade = sql_revision(revision)``.
    """

    def upgrade() -> None:
        run_section(revision, "up")

    def downgrade() -> None:
        run_section(revision, "down")

    return upgrade, downgrade

"""``compozy migrate up|down|status``: move a database along the migration history."""

from __future__ import annotations

from typing import Annotated

import typer

from compozy.cli.runtime import (
    ConfigFlags,
    config_options,
    missing_sqlite_file,
    refuse_missing_sqlite_file,
    unmigrated_store,
)
from compozy.errors import ValidationError
from compozy.store import Store, migrations
from compozy.store.migrations import MigrationStatus

__all__ = ["down", "migrate_app", "status", "up"]

migrate_app = typer.Typer(
    help="Apply, revert or show the database schema migrations.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _revision(revision: str | None, head: str) -> str:
    if revision is None:
        return "none"
    return f"{revision} (head)" if revision == head else revision


def _report(store: Store, before: MigrationStatus, after: MigrationStatus) -> None:
    if before.current == after.current:
        typer.echo(f"already at {_revision(after.current, after.head)}")
        return
    typer.echo(
        f"migrated {store.describe()} from {_revision(before.current, before.head)} "
        f"to {_revision(after.current, after.head)}"
    )


@migrate_app.command()
@config_options
def up(
    to: Annotated[
        str, typer.Option("--to", metavar="REV", help="Revision to stop at (default: head).")
    ] = "head",
    *,
    flags: ConfigFlags,
) -> None:
    """Apply pending migrations, up to the head or to --to REV."""
    config = flags.load().database
    with unmigrated_store(config) as store:
        before = migrations.status(store)
        _report(store, before, migrations.upgrade(store, to))


@migrate_app.command()
@config_options
def down(
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="REV", help="Revision to go back to ('base' for none)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", metavar="N", min=1, help="Number of revisions to revert."),
    ] = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Revert migrations, back to --to REV or by --steps N."""
    # Checked before the store opens, which would create a missing SQLite file for nothing.
    if (to is None) == (steps is None):
        raise ValidationError(
            "migrate down needs exactly one of --to REV or --steps N; pass one of them"
        )
    config = flags.load().database
    refuse_missing_sqlite_file(config, "revert")
    with unmigrated_store(config) as store:
        before = migrations.status(store)
        _report(store, before, migrations.downgrade(store, to=to, steps=steps))


@migrate_app.command()
@config_options
def status(*, flags: ConfigFlags) -> None:
    """Show the database, its current revision and the pending ones."""
    config = flags.load().database
    missing = missing_sqlite_file(config)
    if missing is not None:
        # Reported without opening it: opening a SQLite database creates the file.
        typer.echo(f"database: sqlite {missing} (no file yet)")
        typer.echo("current:  none")
        typer.echo(f"pending:  {', '.join(migrations.revisions())}")
        return
    with unmigrated_store(config) as store:
        found = migrations.status(store)
        typer.echo(f"database: {store.describe()}")
        typer.echo(f"current:  {_revision(found.current, found.head)}")
        typer.echo(f"pending:  {', '.join(found.pending) or 'none'}")

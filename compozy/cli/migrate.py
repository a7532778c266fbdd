"""``compozy migrate up|down|status``: move a database along the migration history.

A ``down`` that would drop tables holding rows lists them with their row counts first, then
asks on a terminal, or needs ``--yes`` elsewhere; a ``down`` that drops no rows just runs.
"""

from __future__ import annotations

import sys
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
from compozy.store.dropped import data_dropped
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
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Drop tables that hold rows without asking (needed off a terminal)."
        ),
    ] = False,
    *,
    flags: ConfigFlags,
) -> None:
    """Revert migrations, back to --to REV or by --steps N; asks before dropping any rows."""
    # Checked before the store opens, which would create a missing SQLite file for nothing.
    if (to is None) == (steps is None):
        raise ValidationError(
            "migrate down needs exactly one of --to REV or --steps N; pass one of them"
        )
    config = flags.load().database
    refuse_missing_sqlite_file(config, "revert")
    with unmigrated_store(config) as store:
        before = migrations.status(store)
        checkable, target = _down_target(before, to, steps)
        if checkable:
            _confirm_dropped_rows(store, before, target, yes=yes)
        _report(store, before, migrations.downgrade(store, to=to, steps=steps))


def _down_target(
    before: MigrationStatus, to: str | None, steps: int | None
) -> tuple[bool, str | None]:
    """(True, the revision a down goes back to, None for base), or (False, None) where
    ``downgrade`` itself refuses it (more steps than applied, a revision not behind this one)."""
    applied = before.applied
    if to is not None:
        if to == "base":
            return True, None
        return (True, to) if to in applied else (False, None)
    assert steps is not None
    if steps > len(applied):
        return False, None
    return True, applied[-steps - 1] if steps < len(applied) else None


def _confirm_dropped_rows(
    store: Store, before: MigrationStatus, target: str | None, *, yes: bool
) -> None:
    """List the rows the down would delete; then ask, or need ``--yes`` off a terminal."""
    dropped = data_dropped(store, before.current, target)
    counts, values = dropped.rows, dropped.values
    total = sum(counts.values()) + sum(values.values())
    if not total:
        return
    moving = (
        f"migrate down from {_revision(before.current, before.head)} to "
        f"{_revision(target, before.head)} drops"
    )
    for heading, found, unit in (
        ("these tables and every row in them", counts, "row"),
        ("these columns and every value in them", values, "value"),
    ):
        if found:
            typer.echo(f"{moving} {heading}:")
            width = max(len(name) for name in found)
            for name, n in found.items():
                typer.echo(f"  {name.ljust(width)}  {n} {unit}{'' if n == 1 else 's'}")
    if {"users", "api_keys"} & counts.keys():
        typer.echo(
            "Every API key stops working: after `compozy migrate up`, make an admin and a key "
            "with `compozy users create EMAIL --role admin` and `compozy keys create --user EMAIL`."
        )
    if yes:
        return
    if not sys.stdin.isatty():
        raise ValidationError(
            "migrate down would delete what is listed above and cannot ask for confirmation "
            "without a terminal; pass --yes to confirm"
        )
    if not typer.confirm("Drop them?", default=False, err=True):
        typer.echo("nothing was changed", err=True)
        raise typer.Abort()


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

"""``compozy export``, ``compozy import`` and ``compozy backup``: move or copy a project's data.

The work is ``compozy.transfer``'s; these commands open the configured database, the files
and the progress line. docs/moving-data.md walks through them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import typer

from compozy.cli.runtime import (
    ConfigFlags,
    config_options,
    missing_sqlite_file,
    refuse_missing_sqlite_file,
    unmigrated_store,
)
from compozy.config import MEMORY_PATH, DatabaseConfig
from compozy.store import Store
from compozy.transfer import (
    TransferSummary,
    backup,
    export_data,
    import_data,
    open_input,
    open_output,
)

__all__ = ["backup_command", "export_command", "import_command"]

ProgressFlag = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Show a progress line on stderr (default: when stderr is a terminal).",
    ),
]


class _ProgressLine:
    """``export task_states 12,000/200,000`` on one stderr line, redrawn at most 10 times a
    second."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        self._last = 0.0
        self._drawn = False

    def __call__(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        self._drawn = True
        percent = f" {100 * done // total}%" if total else ""
        sys.stderr.write(f"\r{self._verb} {table} {done:,}/{total:,}{percent}\x1b[K")
        sys.stderr.flush()

    def end(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _progress_line(verb: str, wanted: bool | None) -> _ProgressLine | None:
    show = sys.stderr.isatty() if wanted is None else wanted
    return _ProgressLine(verb) if show else None


@contextmanager
def _import_target(config: DatabaseConfig, missing: str | None) -> Iterator[Store]:
    """The database to import into. A SQLite file (and folders) that opening it creates is
    removed again if the import fails, so a refused import leaves nothing behind."""
    new_folders = [p for p in Path(missing).parents if not p.exists()] if missing else []
    with unmigrated_store(config) as store:
        try:
            yield store
        except BaseException:
            if missing:
                store.close()
                for path in store.files():
                    path.unlink(missing_ok=True)
                for folder in new_folders:  # deepest first
                    with suppress(OSError):
                        folder.rmdir()
            raise


def _counts(summary: TransferSummary) -> str:
    return ", ".join(f"{t.rows:,} {name}" for name, t in summary.tables.items())


@config_options
def export_command(
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (mode 0600; gzip when it ends in .gz) instead of stdout.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --output file if it exists.")
    ] = False,
    progress: ProgressFlag = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Write every row of the database to one export stream (stdout by default)."""
    config = flags.load().database
    refuse_missing_sqlite_file(config, "export")
    line = _progress_line("export", progress)
    with (
        unmigrated_store(config) as store,
        open_output(output, force=force, protected=store.files()) as out,
    ):
        try:
            summary = export_data(store, out, progress=line)
        finally:
            if line is not None:
                line.end()
    typer.echo(
        f"exported {_counts(summary)} from {store.describe()} (schema {summary.revision})"
        + (f" to {output}" if output not in (None, "-") else ""),
        err=True,
    )


@config_options
def import_command(
    file: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE]", help="The export to read (default: stdin); .gz is read too."
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Delete the target's rows first, in the same transaction."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the file against the target, then roll back."),
    ] = False,
    progress: ProgressFlag = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Import an export into the database, in one transaction: all of it or nothing."""
    config = flags.load().database
    missing = missing_sqlite_file(config)
    target = f"sqlite {missing} (a new file)" if missing else ""
    if dry_run and missing:
        # Checked against an empty in-memory database instead of creating the file.
        config = config.model_copy(update={"path": MEMORY_PATH})
    line = _progress_line("import", progress)
    created = None if dry_run else missing
    with open_input(file) as source, _import_target(config, created) as store:
        try:
            summary = import_data(store, source, replace=replace, dry_run=dry_run, progress=line)
        finally:
            if line is not None:
                line.end()
    if dry_run:
        typer.echo(
            f"dry run: the export is whole and {_counts(summary)} would import into "
            f"{target or store.describe()} (schema {summary.revision}); nothing was written"
        )
        return
    typer.echo(
        f"imported {_counts(summary)} into {store.describe()} (schema {summary.revision}, "
        f"exported from {summary.driver})"
    )


@config_options
def backup_command(
    dest: Annotated[str, typer.Argument(metavar="DEST", help="The new file to write.")],
    *,
    flags: ConfigFlags,
) -> None:
    """Copy a SQLite database to DEST while servers keep using it (PostgreSQL: use pg_dump)."""
    config = flags.load().database
    refuse_missing_sqlite_file(config, "back up")
    with unmigrated_store(config) as store:
        written = backup(store, dest)
    typer.echo(f"backed up {store.describe()} to {written}")

"""The ``compozy`` command: its Typer app, and ``main()``, which reports user errors in one line.

Errors a user can cause (a bad flag, config, value or path, an unreachable database) print
``error: <message>`` on stderr and exit with code 2; only bugs end in a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from compozy import __version__
from compozy.cli.executions import executions_app
from compozy.cli.init import init
from compozy.cli.migrate import migrate_app
from compozy.cli.run import run
from compozy.cli.start import start
from compozy.cli.transfer import backup_command, export_command, import_command
from compozy.cli.worker import worker
from compozy.errors import CompozyError

__all__ = ["EXIT_ERROR", "EXIT_OK", "app", "main"]

EXIT_OK = 0
EXIT_ERROR = 2  # the input was wrong: a flag, the config, a value, a path or the database
_EXIT_ABORTED = 1
_PROG_NAME = "compozy"
_LOGGER_NAME = "compozy"

app = typer.Typer(
    name=_PROG_NAME,
    # Completion installers would edit the user's shell files; not this command's job.
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("init")(init)
app.command("run")(run)
app.command("start")(start)
app.command("worker")(worker)
app.command("export")(export_command)
app.command("import")(import_command)
app.command("backup")(backup_command)
app.add_typer(migrate_app, name="migrate")
app.add_typer(executions_app, name="executions")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{_PROG_NAME} {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Compozy: workflow state on PostgreSQL or SQLite."""


class _OneLineFormatter(logging.Formatter):
    """``<level>: <message>`` on one line; tracebacks are left out, as for errors."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {_one_line(record.getMessage())}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _error(message: str) -> None:
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()


def _usage_message(exc: typer.TyperException) -> str:
    """Click's usage error as one sentence, pointing at the help of the command that failed."""
    message = _one_line(exc.format_message()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)  # only usage errors carry the context they failed in
    command_path = getattr(ctx, "command_path", None) or _PROG_NAME
    return f"{message}; run '{command_path} --help' for usage"


def _run(argv: list[str]) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=_PROG_NAME, standalone_mode=False)
    except CompozyError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except typer.Abort:
        _error("aborted")
        return _EXIT_ABORTED
    except typer.TyperException as exc:
        # Click's own errors: unknown option, missing argument, a value of the wrong type.
        _error(_usage_message(exc))
        return EXIT_ERROR
    # Without standalone mode, click returns the exit code of --help, --version and typer.Exit.
    return result if isinstance(result, int) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``compozy`` with ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    # Built per call, so the handler writes to the sys.stderr of this call (pytest swaps it).
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLineFormatter())
    logger = logging.getLogger(_LOGGER_NAME)
    logger.addHandler(handler)
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    finally:
        # Removed again so calling main() repeatedly in one process does not repeat warnings.
        logger.removeHandler(handler)

"""The ``compozy`` command: its Typer app, and ``main()``, which reports user errors in one line.

Errors a user can cause (a bad flag, config, value or path, an unreachable database) print
``error: <message>`` on stderr and exit with code 2; only bugs end in a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from compozy import __version__
from compozy.errors import CompozyError, ValidationError

__all__ = ["EXIT_ERROR", "EXIT_OK", "app", "main", "set_log_level", "silence_stdout"]

EXIT_OK = 0
EXIT_ERROR = 2  # the input was wrong: a flag, the config, a value, a path or the database
_EXIT_ABORTED = 1
_PROG_NAME = "compozy"
_LOGGER_NAMES = ("compozy", "uvicorn")

_COMPLETE_VAR = "_COMPOZY_COMPLETE"  # set by the script `compozy completion SHELL` prints

# Each command's module is imported when that command runs (or --help lists it), so that
# `compozy --version` and shell completion of a command name do not load SQLAlchemy, FastAPI
# and the engine. A new command goes here: its name -> (module, the function or Typer app).
_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("compozy.cli.init", "init"),
    "run": ("compozy.cli.run", "run"),
    "start": ("compozy.cli.start", "start"),
    "worker": ("compozy.cli.worker", "worker"),
    "export": ("compozy.cli.transfer", "export_command"),
    "import": ("compozy.cli.transfer", "import_command"),
    "backup": ("compozy.cli.transfer", "backup_command"),
    "migrate": ("compozy.cli.migrate", "migrate_app"),
    "executions": ("compozy.cli.executions", "executions_app"),
    "users": ("compozy.cli.users", "users_app"),
    "keys": ("compozy.cli.users", "keys_app"),
    "knowledge": ("compozy.cli.knowledge", "knowledge_app"),
}


class _LazyGroup(typer.core.TyperGroup):
    """The root group: builds a command from ``_COMMANDS`` the first time it is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            self.add_command(_load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


def _load_command(name: str) -> Any:
    module, attribute = _COMMANDS[name]
    found = getattr(importlib.import_module(module), attribute)
    if isinstance(found, typer.Typer):
        group = typer.main.get_group(found)
        group.name = name
        return group
    single = typer.Typer(add_completion=False, context_settings=app.info.context_settings)
    single.command(name)(found)
    return typer.main.get_command(single)


app = typer.Typer(
    name=_PROG_NAME,
    cls=_LazyGroup,
    # Completion installers would edit the user's shell files; `compozy completion SHELL`
    # prints the script instead, for the user to put where their shell reads it.
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_SHELLS = ("bash", "zsh", "fish", "powershell")


@app.command("completion")
def completion(
    shell: Annotated[
        str, typer.Argument(metavar="|".join(_SHELLS), help="The shell to complete in.")
    ],
) -> None:
    """Print the shell completion script for SHELL.

    bash: compozy completion bash > ~/.local/share/bash-completion/completions/compozy;
    zsh: compozy completion zsh > "${fpath[1]}/_compozy"; fish: compozy completion fish >
    ~/.config/fish/completions/compozy.fish.
    """
    from typer._completion_shared import get_completion_script

    if shell.lower() not in _SHELLS:
        raise ValidationError(f"no completion for shell {shell!r}; choose {', '.join(_SHELLS)}")
    script = get_completion_script(
        prog_name=_PROG_NAME, complete_var=_COMPLETE_VAR, shell=shell.lower()
    )
    typer.echo(script)


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
    if os.environ.get(_COMPLETE_VAR):
        # A completion request from the script `compozy completion SHELL` printed: Typer's
        # completion classes read what that script sends.
        from typer._completion_classes import completion_init

        completion_init()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=_PROG_NAME, standalone_mode=False)
    except BrokenPipeError:
        # The reader of stdout went away (`compozy ... | head -1`): what it wanted it had.
        silence_stdout()
        return EXIT_OK
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


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is left in its
    buffer does not fail on the closed pipe again (and print a traceback) at exit."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file: pytest's capture
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


_handlers: list[logging.Handler] = []  # the handler of the main() call that is running


def set_log_level(level: str) -> None:
    """Show log records of ``compozy`` (and of uvicorn, which ``compozy start`` runs) from
    ``level`` (debug, info, warning, error) on, for the rest of this ``main()`` call."""
    number = logging.getLevelName(level.upper())
    for name in _LOGGER_NAMES:
        logging.getLogger(name).setLevel(number)
    for handler in _handlers:
        handler.setLevel(number)


def main(argv: list[str] | None = None) -> int:
    """Run ``compozy`` with ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    # Built per call, so the handler writes to the sys.stderr of this call (pytest swaps it).
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLineFormatter())
    loggers = [logging.getLogger(name) for name in _LOGGER_NAMES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    _handlers.append(handler)
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    finally:
        # Removed again so calling main() repeatedly in one process does not repeat warnings.
        _handlers.remove(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)

"""What the commands share: the config and database options, and for ``compozy run``,
``start`` and ``worker`` the store, workflow definitions and engine."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from compozy.config import Config, DatabaseConfig, find_config_file, load_config
from compozy.engine import Engine, WorkflowCatalog
from compozy.errors import ValidationError
from compozy.knowledge.bases import KnowledgeBases, activate
from compozy.store import Store, open_store

_log = logging.getLogger("compozy.cli")

INIT_DATABASE_FOLDER = ".compozy"
"""The folder next to ``compozy.yaml`` where ``compozy init`` puts a SQLite database."""
ConfigFile = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Config file to read (default: compozy.yaml in the current directory or the "
        "nearest folder above it, if any).",
    ),
]
DbDriver = Annotated[
    str | None,
    typer.Option("--db-driver", metavar="postgres|sqlite", help="Database driver."),
]
DbPath = Annotated[
    str | None,
    typer.Option("--db-path", metavar="PATH", help="SQLite database file."),
]
DbConnString = Annotated[
    str | None,
    typer.Option("--db-conn-string", metavar="URL", help="PostgreSQL connection string."),
]


@dataclass(frozen=True)
class ConfigFlags:
    """What a command was given with ``--config`` and the database options.

    The command loads the configuration when it is ready to (``load``), after checking its own
    arguments, so a mistake in those is reported first.
    """

    file: str | None = None
    driver: str | None = None
    path: str | None = None
    conn_string: str | None = None

    def load(self, **sections: dict[str, Any]) -> Config:
        """The configuration, with the database flags (and other sections' flags) on top."""
        database = {"driver": self.driver, "path": self.path, "conn_string": self.conn_string}
        return load_config(self.file, overrides={"database": database, **sections})


_FLAG_PARAMETERS = tuple(
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    for name, annotation in (
        ("config_file", ConfigFile),
        ("db_driver", DbDriver),
        ("db_path", DbPath),
        ("db_conn_string", DbConnString),
    )
)


def config_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command ``--config``, ``--db-driver``, ``--db-path`` and ``--db-conn-string``,
    listed after its own options; it receives them as its ``flags: ConfigFlags`` parameter.

    Typer builds a command's options from its signature, so the wrapper shows Typer the
    command's own parameters (without ``flags``) followed by the four options.
    """
    signature = inspect.signature(command, eval_str=True)
    if "flags" not in signature.parameters:
        raise TypeError(f"{command.__name__} needs a 'flags: ConfigFlags' parameter")
    own = [p for name, p in signature.parameters.items() if name != "flags"]

    @functools.wraps(command)
    def with_flags(
        *,
        config_file: str | None = None,
        db_driver: str | None = None,
        db_path: str | None = None,
        db_conn_string: str | None = None,
        **arguments: Any,
    ) -> None:
        flags = ConfigFlags(config_file, db_driver, db_path, db_conn_string)
        command(**arguments, flags=flags)

    with_flags.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *_FLAG_PARAMETERS]
    )
    return with_flags


def missing_sqlite_file(config: DatabaseConfig) -> str | None:
    """The path of a SQLite database file that does not exist yet (opening would create it)."""
    path = config.sqlite_file
    return None if path is None or path.exists() else str(path)


def refuse_missing_sqlite_file(config: DatabaseConfig, action: str) -> None:
    """``ValidationError`` before a command that only reads or reverts a database would
    create an empty SQLite file: "there is no SQLite database at PATH, so nothing to ACTION"."""
    missing = missing_sqlite_file(config)
    if missing is not None:
        raise ValidationError(f"there is no SQLite database at {missing}, so nothing to {action}")


def warn_if_recreated(config: DatabaseConfig) -> None:
    """Say loudly that a lost database is about to be replaced by an empty one: when the SQLite
    file is missing from a ``.compozy`` folder, where ``compozy init`` put it, opening would
    silently create a new, empty database there (and ``compozy init`` refuses to run again)."""
    missing = missing_sqlite_file(config)
    if missing is None or Path(missing).parent.name != INIT_DATABASE_FOLDER:
        return
    _log.warning(
        "there is no SQLite database at %s, where `compozy init` put this project's database; "
        "an empty one is created there now. If the project had executions, users or API keys, "
        "stop compozy and restore them: copy a backup made by `compozy backup` to that path, "
        "or load an export with `compozy import FILE --replace`.",
        missing,
    )


@contextmanager
def existing_store(config: DatabaseConfig) -> Iterator[Store]:
    """The configured database, for commands that manage what is in it (``executions``,
    ``users``, ``keys``); a SQLite file that does not exist is refused, not created. Never
    migrated here: an operator fixing access must not upgrade a schema older servers use."""
    missing = missing_sqlite_file(config)
    if missing is not None:
        raise ValidationError(
            f"there is no SQLite database at {missing}; check --db-path or the config "
            "file (`compozy init` or `compozy migrate up` creates one)"
        )
    with unmigrated_store(config) as store:
        health = store.health()
        if not health.ok and health.revision is not None and health.revision != health.head:
            raise ValidationError(
                f"{store.describe()} is at schema revision {health.revision} and this compozy "
                f"needs {health.head}: run `compozy migrate up` first"
            )
        yield store


@contextmanager
def unmigrated_store(config: DatabaseConfig) -> Iterator[Store]:
    """The configured database, opened without migrating it, for commands that move the
    schema themselves (``migrate``, ``import``) or must not (``export``, ``backup``)."""
    store = open_store(config.model_copy(update={"auto_migrate": False}))
    try:
        yield store
    finally:
        store.close()


@dataclass
class Runtime:
    """An open store and an engine over the configured workflows."""

    config: Config
    store: Store
    engine: Engine
    knowledge: KnowledgeBases
    """The configured knowledge bases, which the ``knowledge_search`` tool searches."""


@contextmanager
def open_runtime(config_file: str | None, config: Config) -> Iterator[Runtime]:
    """Load the workflows, open the store (migrating it if configured) and start an engine."""
    # User tools are named module:function; like `python -m`, look for them next to the config.
    found = Path(config_file) if config_file else find_config_file()
    project = found.resolve().parent if found else Path.cwd()
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    # A broken file is reported and left out; a worker picks up added and changed files.
    definitions = WorkflowCatalog(config.workflows)
    warn_if_recreated(config.database)
    store = open_store(config.database)
    try:
        runtime = config.runtime
        engine = Engine(
            store,
            definitions,
            max_concurrent_workflows=config.worker.max_concurrent_workflows,
            worker_id=runtime.worker_id,
            lease=runtime.lease,
            poll_interval=runtime.poll_interval,
            recovery=runtime.recovery,
        )
        with KnowledgeBases(config) as knowledge, activate(knowledge), engine:
            yield Runtime(config, store, engine, knowledge)
    finally:
        store.close()

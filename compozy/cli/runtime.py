"""What ``compozy run`` and ``compozy start`` share: config, store, workflow definitions, engine."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from compozy.config import Config, load_config
from compozy.engine import Engine, WorkflowDefinition, load_definitions
from compozy.store import Store, open_store

ConfigFile = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Config file to read (default: compozy.yaml in the current directory, if any).",
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


def config_from_flags(
    config_file: str | None,
    driver: str | None,
    path: str | None,
    conn_string: str | None,
    **sections: dict[str, Any],
) -> Config:
    """The configuration, with the database flags (and other sections' flags) on top."""
    overrides = {"database": {"driver": driver, "path": path, "conn_string": conn_string}}
    return load_config(config_file, overrides={**overrides, **sections})


@dataclass
class Runtime:
    """An open store and an engine over the configured workflows."""

    config: Config
    store: Store
    engine: Engine


@contextmanager
def open_runtime(config_file: str | None, config: Config) -> Iterator[Runtime]:
    """Load the workflows, open the store (migrating it if configured) and start an engine."""
    # User tools are named module:function; like `python -m`, look for them next to the config.
    project = Path(config_file).resolve().parent if config_file else Path.cwd()
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    definitions: dict[str, WorkflowDefinition] = load_definitions(config.workflows)
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
        with engine:
            yield Runtime(config, store, engine)
    finally:
        store.close()

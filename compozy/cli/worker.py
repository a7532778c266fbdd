"""``compozy worker``: run executions stored by any API server or process, without an API."""

from __future__ import annotations

import typer

from compozy.cli.runtime import (
    ConfigFile,
    DbConnString,
    DbDriver,
    DbPath,
    config_from_flags,
    open_runtime,
)
from compozy.cli.serving import Stopper, stop_gracefully

__all__ = ["worker"]


def worker(
    config_file: ConfigFile = None,
    db_driver: DbDriver = None,
    db_path: DbPath = None,
    db_conn_string: DbConnString = None,
) -> None:
    """Claim and run PENDING executions from the database until SIGINT or SIGTERM."""
    config = config_from_flags(config_file, db_driver, db_path, db_conn_string)
    with open_runtime(config_file, config) as runtime:
        engine = runtime.engine
        stopper = Stopper(hint=": the leases expire and other workers resume")
        with stopper.installed():
            engine.serve()
            typer.echo(
                f"worker {engine.worker_id} on {runtime.store.location}: up to "
                f"{config.worker.max_concurrent_workflows} of "
                f"{', '.join(sorted(engine.definitions)) or 'no workflows'} at once, "
                f"lease {config.runtime.lease:g}s; Ctrl-C to stop",
                err=True,
            )
            stopper.wait()
            stop_gracefully(engine, config.runtime.shutdown_grace)

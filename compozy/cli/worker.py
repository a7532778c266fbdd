"""``compozy worker``: run executions stored by any API server or process, without an API."""

from __future__ import annotations

import typer

from compozy.cli.runtime import ConfigFlags, config_options, open_runtime
from compozy.cli.serving import Stopper, stop_gracefully

__all__ = ["worker"]


@config_options
def worker(*, flags: ConfigFlags) -> None:
    """Claim and run PENDING executions from the database until SIGINT or SIGTERM."""
    config = flags.load()
    with open_runtime(flags.file, config) as runtime:
        engine = runtime.engine
        stopper = Stopper(hint=": the leases expire and other workers resume")
        with stopper.installed():
            engine.serve()
            typer.echo(
                f"worker {engine.worker_id} on {runtime.store.describe()}: up to "
                f"{config.worker.max_concurrent_workflows} of "
                f"{', '.join(sorted(engine.definitions)) or 'no workflows'} at once, "
                f"lease {config.runtime.lease:g}s; Ctrl-C to stop",
                err=True,
            )
            stopper.wait()
            stop_gracefully(engine, config.runtime.shutdown_grace)

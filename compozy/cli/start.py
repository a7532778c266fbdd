"""``compozy start``: serve the HTTP API and run a worker in this process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

import compozy
from compozy.cli.runtime import ConfigFlags, config_options, open_runtime
from compozy.cli.serving import Stopper, stop_gracefully
from compozy.config import Config
from compozy.engine import Engine
from compozy.store import Store

__all__ = ["start"]

SQLITE_CONCURRENCY_LIMIT = 10
NO_USERS_HINT = (
    "this database has no users, so no API key works yet: create the first admin with "
    "`compozy users create EMAIL --role admin`, then a key with `compozy keys create --user "
    "EMAIL` (with this command's config and database flags)"
)
_log = logging.getLogger("compozy.start")


def _startup_warnings(config: Config) -> list[str]:
    """What an operator should hear about before the server takes traffic."""
    if config.database.driver != "sqlite":
        return []
    found = []
    if config.environment == "production":
        found.append(
            "SQLite with environment: production: one writer at a time on one machine; "
            "use PostgreSQL for production deployments"
        )
    workers = config.worker.max_concurrent_workflows
    if workers > SQLITE_CONCURRENCY_LIMIT:
        found.append(
            f"worker.max_concurrent_workflows is {workers} with SQLite, which serialises writes; "
            f"keep it at {SQLITE_CONCURRENCY_LIMIT} or less, or use PostgreSQL"
        )
    return found


def _startup_line(config: Config, store: Store, host: str, port: int) -> str:
    if store.driver == "sqlite":
        guidance = "one writer at a time: processes on this host only"
    else:
        database = config.database
        guidance = f"pool of {database.pool_size}+{database.max_overflow} connections"
    return (
        f"compozy {compozy.__version__} on http://{host}:{port}, {store.describe()} "
        f"({guidance}), up to {config.worker.max_concurrent_workflows} workflows at once"
    )


@config_options
def start(
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", metavar="PORT", help="Port to listen on.")
    ] = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Serve the API (default http://127.0.0.1:5001) and run a worker in this process."""
    import uvicorn

    from compozy.api import create_app

    config = flags.load(server={"host": host, "port": port})
    for warning in _startup_warnings(config):
        _log.warning(warning)
    with open_runtime(flags.file, config) as runtime:
        engine = runtime.engine
        server = config.server
        typer.echo(_startup_line(config, runtime.store, server.host, server.port), err=True)
        in_memory = config.database.driver == "sqlite" and config.database.sqlite_file is None
        if not in_memory and not runtime.store.auth.list_users_page(limit=1).items:
            _log.warning(NO_USERS_HINT)
        app = create_app(runtime.store, engine=engine)
        http = _Server(
            uvicorn.Config(app, host=server.host, port=server.port, log_level="warning"), engine
        )
        stopper = Stopper(http.stop, hint=": the leases expire and other workers resume")
        with stopper.installed():  # through the graceful stop: a second signal exits at once
            http.run()
            if http.bound:
                stop_gracefully(engine, config.runtime.shutdown_grace)


class _Server:
    """uvicorn's server with compozy's signal handling: the worker starts claiming once the
    port is bound (a second server on a taken port takes no work) and stops on the first
    signal, after which ``compozy start`` stops the worker gracefully."""

    def __init__(self, config: Any, engine: Engine) -> None:
        import uvicorn

        engine_ = engine

        class Server(uvicorn.Server):
            @contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the Stopper handles them

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started and not self.should_exit:
                    engine_.serve()

        self._server = Server(config)

    @property
    def bound(self) -> bool:
        """True once the server listened (and so the worker served)."""
        return bool(self._server.started)

    def run(self) -> None:
        self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True

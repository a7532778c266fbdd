"""``compozy start``: serve the HTTP API and run a worker in this process."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

import compozy
from compozy.auth import User
from compozy.auth.keys import new_api_key
from compozy.cli.main import set_log_level
from compozy.cli.runtime import ConfigFlags, config_options, open_runtime
from compozy.cli.serving import Stopper, stop_gracefully
from compozy.config import Config
from compozy.config.models import MEMORY_PATH
from compozy.engine import Engine
from compozy.errors import ValidationError
from compozy.store import Store

__all__ = ["start"]

SQLITE_CONCURRENCY_LIMIT = 10
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


_LOG_LEVELS = "debug|info|warning|error"
_ACCESS_LOGGER = "compozy.access"  # compozy.api.middleware.ACCESS_LOGGER
_MEMORY_ADMIN = "admin@localhost"


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or ``ValidationError`` saying why it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ValidationError(
            f"cannot listen on {host}: it is not an IP address or a name that resolves "
            f"({reason}); set --host (server.host) to an address of this machine, such as "
            "127.0.0.1 or 0.0.0.0"
        ) from None
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # sockets that say they are TCP, and an accepted socket says what its listener says.
    # Without it a keep-alive connection waits ~40 ms for a delayed ACK on every response
    # (uvicorn writes the headers and the body separately).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ValidationError(_listen_problem(host, port, exc)) from None
    sock.set_inheritable(True)
    return sock


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (another compozy start or another "
            "server); stop that one or choose another port with --port (server.port)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine; use one of "
            "its addresses, 127.0.0.1, or 0.0.0.0 for all of them (--host, server.host)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
            "choose a port above 1023 with --port (server.port)"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"


def _first_admin(config: Config, store: Store) -> None:
    """Make sure someone can call the API: an in-memory database gets an admin and a key,
    printed once; any other database without users gets told how to make the first one."""
    if store.auth.list_users_page(limit=1).items:
        return
    database = config.database
    if database.driver == "sqlite" and database.path == MEMORY_PATH:
        admin = store.auth.create_initial_admin_if_none(User(email=_MEMORY_ADMIN))
        key, plaintext = new_api_key(admin.id)
        store.auth.create_api_key(key)
        typer.echo(
            f"in-memory database: created the admin {admin.email} and this API key, shown only "
            "now; the database, and so the key, is gone when the server stops:",
            err=True,
        )
        typer.echo(plaintext)  # stdout, alone on its line: `compozy start ... | head -1`
        return
    _log.warning(
        "the database has no users, so no API key can call the API yet; create the first "
        "admin with `compozy users create EMAIL --role admin`, then its key with "
        "`compozy keys create --user EMAIL`"
    )


@contextmanager
def _access_log(enabled: bool) -> Iterator[None]:
    """While serving: each request's access line on stderr, whatever --log-level is."""
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger = logging.getLogger(_ACCESS_LOGGER)
    previous = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


@config_options
def start(
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", metavar="PORT", help="Port to listen on.")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar=_LOG_LEVELS,
            help="What to log on stderr (default: warning; server.log_level).",
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="One line on stderr per HTTP request (default: off; server.access_log).",
            show_default=False,
        ),
    ] = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Serve the API (default http://127.0.0.1:5001) and run a worker in this process."""
    import uvicorn

    from compozy.api import create_app

    overrides = {"host": host, "port": port, "log_level": log_level, "access_log": access_log}
    config = flags.load(server=overrides)
    server = config.server
    set_log_level(server.log_level)
    for warning in _startup_warnings(config):
        _log.warning(warning)
    # Bound before anything else happens, so a taken port or a bad host is one error line.
    listener = _listen(server.host, server.port)
    with listener, open_runtime(flags.file, config) as runtime, _access_log(server.access_log):
        engine = runtime.engine
        _first_admin(config, runtime.store)
        typer.echo(_startup_line(config, runtime.store, server.host, server.port), err=True)
        app = create_app(
            runtime.store,
            engine=engine,
            max_body_bytes=server.max_body_bytes,
            metrics_auth=server.metrics_auth,
            access_log=server.access_log,
            knowledge=runtime.knowledge,
        )
        uvicorn_config = uvicorn.Config(
            app, log_level=server.log_level, log_config=None, access_log=False
        )
        http = _Server(uvicorn_config, engine)
        stopper = Stopper(http.stop, hint=": the leases expire and other workers resume")
        with stopper.installed():  # through the graceful stop: a second signal exits at once
            http.run(listener)
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

    def run(self, listener: socket.socket) -> None:
        self._server.run(sockets=[listener])

    def stop(self) -> None:
        self._server.should_exit = True

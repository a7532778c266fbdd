"""Where the tests' PostgreSQL comes from, and how its databases are made and dropped.

Sources, first that works: an explicit URL; a throwaway cluster built from the installed server
binaries (``initdb`` + ``pg_ctl``, fsync off, its own temp dir and port; through ``runuser -u
postgres`` when running as root, since both refuse to run as root); testcontainers when a Docker
engine answers. ``PostgresUnavailable`` lists everything that was tried.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

_STARTUP_TIMEOUT = 60


class PostgresUnavailable(Exception):
    """No source gave a PostgreSQL server; ``tried`` says what was attempted and why it failed."""

    def __init__(self, tried: list[str]) -> None:
        super().__init__("no PostgreSQL for the tests: " + "; ".join(tried))
        self.tried = tried


@dataclass
class PostgresServer:
    """A running server the tests may create and drop databases on."""

    admin_url: str
    """``postgresql://`` URL of a database to run CREATE/DROP DATABASE from."""
    source: str
    startup_seconds: float
    stop_callback: Callable[[], None] | None = field(default=None, repr=False)
    restart_callback: Callable[[], None] | None = field(default=None, repr=False)
    """Stops the server (closing every session) and starts it again: local clusters only."""

    def url(self, database: str) -> str:
        """The URL of another database on this server."""
        base, _, query = self.admin_url.partition("?")
        root = base.rsplit("/", 1)[0]
        return f"{root}/{database}" + (f"?{query}" if query else "")

    def execute(self, statement: sql.Composed) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name`` (a copy of ``template`` if given) and return its URL."""
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            # FILE_COPY clones a small database faster than PostgreSQL 15's default WAL_LOG.
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        for attempt in range(20):
            try:
                self.execute(stmt)
                break
            except psycopg.errors.ObjectInUse:
                # "source database is being accessed by other users": a pooled connection of
                # the template's last user is still closing.
                if attempt == 19:
                    raise
                time.sleep(0.1)
        return self.url(name)

    def has_database(self, name: str) -> bool:
        """Whether a database called ``name`` exists."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return found.fetchone() is not None

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even if sessions are still connected to it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def restart(self) -> None:
        """Restart the server (a local cluster that these tests started): every session ends."""
        if self.restart_callback is None:
            raise PostgresUnavailable([f"{self.source}: only a local cluster can be restarted"])
        self.restart_callback()

    def stop(self) -> None:
        """Stop the server if these tests started it."""
        if self.stop_callback is not None:
            self.stop_callback()
            self.stop_callback = None


def unique_prefix() -> str:
    """A database-name prefix that two test runs on one server never share."""
    return f"cpzy_{secrets.token_hex(4)}"


SOURCES = ("auto", "local", "docker")
"""Where to look when no URL is given: both in order, only the local binaries, only Docker."""


def acquire(
    url: str | None, *, source: str = "auto", reuse: bool = False, fresh: bool = False
) -> PostgresServer:
    """The first PostgreSQL that works: ``url`` if given, else by ``source``; or raise
    ``PostgresUnavailable`` saying what was tried. With ``reuse``, a throwaway local cluster
    is kept running for the next run (``fresh``: built again first)."""
    if source not in SOURCES:
        raise ValueError(f"unknown PostgreSQL source {source!r}; choose from {', '.join(SOURCES)}")
    if url:
        started = time.perf_counter()
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0]
            raise PostgresUnavailable([f"URL {_mask(url)}: {reason}"]) from None
        return PostgresServer(url, f"URL {_mask(url)}", time.perf_counter() - started)
    tried = ["no URL given (--compozy-postgres-url / COMPOZY_TEST_POSTGRES_URL)"]

    def local() -> PostgresServer:
        return kept_local_cluster(fresh=fresh) if reuse else start_local_cluster()

    starters: tuple[Callable[[], PostgresServer], ...] = {
        "auto": (local, start_container),
        "local": (local,),
        "docker": (start_container,),
    }[source]
    for start in starters:
        try:
            return start()
        except PostgresUnavailable as exc:
            tried.extend(exc.tried)
    raise PostgresUnavailable(tried)


def _mask(url: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparseable URL>"
    user, host = info.get("user", ""), info.get("host", "localhost")
    return f"postgresql://{user}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def find_bindir() -> Path | None:
    """The folder of the ``initdb`` and ``pg_ctl`` found on PATH.

    Only PATH counts, so that what a test run uses is what its environment says; Debian keeps
    the server binaries out of PATH, in /usr/lib/postgresql/<version>/bin (see ``path_hint``).
    """
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def path_hint() -> str:
    """Where installed server binaries are, if they are somewhere off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if not found:
        return "install the PostgreSQL server (Debian: apt-get install postgresql)"
    return f"add {Path(found[-1]).parent} to PATH"


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kept_local_cluster(*, fresh: bool = False) -> PostgresServer:
    """The throwaway cluster kept between runs (``--compozy-reuse-db``) in one folder per user
    under /tmp: reached if it still runs; built (again) if it is missing, stopped, cut short or
    ``fresh``. Never stopped by the run; ``pg_ctl -D <folder>/data stop`` stops it. Do not pass
    ``fresh`` while another run uses it."""
    base = Path(f"/tmp/cpzy-pg-kept-{os.getuid()}")  # noqa: S108 - a short socket path
    port_file = base / "port"
    if fresh and base.exists():
        _stop(base / "data")
        shutil.rmtree(base, ignore_errors=True)
    if port_file.exists():
        started = time.perf_counter()
        url = f"postgresql://postgres@127.0.0.1:{port_file.read_text().strip()}/postgres"
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
            return PostgresServer(
                url, f"kept local cluster ({base})", time.perf_counter() - started
            )
        except psycopg.Error as exc:
            if _running(base / "data"):  # up but not answering (busy, full): never tear it down
                raise PostgresUnavailable(
                    [f"kept local cluster ({base}) runs but did not answer: {exc}"]
                ) from None
    if base.exists():  # stopped, or a build cut short: build it again
        _stop(base / "data")
        shutil.rmtree(base, ignore_errors=True)
    server = start_local_cluster(base)
    port_file.write_text(server.admin_url.rsplit(":", 1)[1].split("/")[0])
    server.stop_callback = None
    server.source = f"kept local cluster ({base}), new"
    return server


def _running(data: Path) -> bool:
    bindir = find_bindir()
    if bindir is None or not data.exists():
        return False
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    status = subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "status"],
        capture_output=True,
        check=False,
    )
    return status.returncode == 0


def _stop(data: Path, bindir: Path | None = None) -> None:
    bindir = bindir or find_bindir()
    if bindir is None or not data.exists():
        return
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-s", "stop"],
        capture_output=True,
        check=False,
    )


def start_local_cluster(base: Path | None = None, bindir: Path | None = None) -> PostgresServer:
    """initdb + pg_ctl start in ``base`` (default: a new short temp dir) with the binaries in
    ``bindir`` (default: those on PATH); stopped and removed by ``stop()``."""
    bindir = bindir or find_bindir()
    if bindir is None:
        raise PostgresUnavailable([f"local cluster: initdb and pg_ctl not on PATH ({path_hint()})"])
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        raise PostgresUnavailable(["local cluster: running as root and runuser is missing"])
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    started = time.perf_counter()
    # The unix socket path must stay under 107 bytes, so the folder lives directly in /tmp
    # (mkdtemp makes it private to its owner).
    short = "/tmp" if os.path.isdir("/tmp") else None  # noqa: S108
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="cpzy-pg-", dir=short))
    else:
        base.mkdir(mode=0o700)
    data, log = base / "data", base / "server.log"
    if as_root:
        shutil.chown(base, "postgres", "postgres")

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            if log.exists():
                detail += log.read_text(errors="replace").strip().splitlines()[-3:]
            shutil.rmtree(base, ignore_errors=True)
            raise PostgresUnavailable(
                [f"local cluster ({bindir}): {args[0]} failed: {' '.join(detail)}"]
            )

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
        "--no-instructions",
        "-E",
        "UTF8",
        "--no-locale",
    )
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )

    def pg_ctl(action: str) -> None:
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-s",
            "-t",
            str(_STARTUP_TIMEOUT),
            "-m",
            "fast",
            "-o",
            options,
            action,
        )

    pg_ctl("start")

    def stop() -> None:
        _stop(data, bindir)
        shutil.rmtree(base, ignore_errors=True)

    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return PostgresServer(
        url,
        f"local cluster ({bindir}, port {port})",
        time.perf_counter() - started,
        stop,
        lambda: pg_ctl("restart"),
    )


def start_container(image: str = "postgres:16-alpine") -> PostgresServer:
    """A PostgreSQL container through testcontainers, when a Docker engine answers."""
    started = time.perf_counter()
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        try:  # testcontainers before the core/community split
            from testcontainers.postgres import PostgresContainer
        except ImportError:
            raise PostgresUnavailable(["testcontainers: not installed"]) from None
    try:
        # The constructor already talks to Docker, so a missing engine fails here, fast.
        container = PostgresContainer(image, driver=None)
        container.start()
    except Exception as exc:  # noqa: BLE001 - docker raises many types; all mean "unavailable"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresUnavailable([f"testcontainers ({image}): {message}"]) from None
    url = container.get_connection_url()
    return PostgresServer(
        url, f"testcontainers ({image})", time.perf_counter() - started, container.stop
    )

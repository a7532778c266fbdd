"""Run-wide state of the testkit: which backends run and where PostgreSQL came from.

The controller process (or the only process, without xdist) decides and provisions; xdist
workers receive the result through ``workerinput`` and never start a server of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

BACKENDS = ("sqlite", "sqlite-file", "postgres")
"""In-memory SQLite, a SQLite file, PostgreSQL (``compozy_testkit.databases.BACKEND_CLASSES``)."""
POSTGRES = "postgres"
"""The backend that needs a server: the plugin provisions it when a collected test needs it."""
PARITY_FIXTURE = "compozy_parity"
"""A test that takes it compares in-memory SQLite with PostgreSQL, so it needs PostgreSQL."""


def parse_backends(values: list[str]) -> tuple[str, ...]:
    """Expand ``all`` and comma or space separated lists into backend names, in canonical order;
    refuse unknowns."""
    wanted: set[str] = set()
    for value in values:
        for name in value.replace(",", " ").split():
            if name == "all":
                wanted.update(BACKENDS)
            elif name in BACKENDS:
                wanted.add(name)
            else:
                raise ValueError(
                    f"unknown compozy backend {name!r}; choose from {', '.join(BACKENDS)} or all"
                )
    return tuple(b for b in BACKENDS if b in wanted)


@dataclass
class PostgresRun:
    """The PostgreSQL of this test run, or why there is none."""

    admin_url: str = ""
    source: str = ""
    template: str = ""
    prefix: str = ""
    seconds: float = 0.0
    error: str = ""

    def to_workerinput(self) -> dict[str, Any]:
        """Plain values that xdist can send to a worker."""
        return asdict(self)

    @classmethod
    def from_workerinput(cls, data: dict[str, Any]) -> PostgresRun:
        """Rebuild what the controller sent."""
        return cls(**data)


@dataclass
class KitState:
    """What every fixture of the plugin consults."""

    backends: tuple[str, ...]
    require_postgres: bool
    postgres_url: str | None
    postgres_source: str = "auto"
    postgres: PostgresRun | None = None
    report_after_collection: bool = False
    server: Any = field(default=None, repr=False)  # PostgresServer, on the provisioning process
    timings: dict[str, list[float]] = field(default_factory=dict)
    """Per backend: [tests run, seconds spent in their set-up, call and teardown]."""
    reuse_db: bool = False
    """Keep the migrated PostgreSQL template (and a throwaway cluster) for the next run."""
    create_db: bool = False
    """With ``reuse_db``: build them again even if kept ones exist."""

    def provision_postgres(self) -> None:
        """Start or reach PostgreSQL and migrate a template database (controller only); with
        ``reuse_db``, one run at a time, so two runs never build the kept ones at once."""
        if not self.reuse_db:
            self._provision_postgres()
            return
        from filelock import FileLock

        with FileLock(os.path.join(tempfile.gettempdir(), f"cpzy-pg-kept-{os.getuid()}.lock")):
            self._provision_postgres()

    def _provision_postgres(self) -> None:
        from compozy.config import DatabaseConfig
        from compozy.store import open_store
        from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

        started = time.perf_counter()
        try:
            server = acquire(
                self.postgres_url,
                source=self.postgres_source,
                reuse=self.reuse_db,
                fresh=self.create_db,
            )
        except PostgresUnavailable as exc:
            self.postgres = PostgresRun(error="; ".join(exc.tried))
            return
        self.server = server
        prefix = unique_prefix()
        # A kept template is named after the migration history, so a changed history (a new
        # revision, an edited SQL file) builds a new one.
        template = f"cpzy_tpl_{history_fingerprint()}" if self.reuse_db else f"{prefix}_template"
        try:
            if self.reuse_db and self.create_db:
                server.drop_database(template)
            if self.reuse_db and server.has_database(template):
                url = server.url(template)  # kept: migrating it again finishes a half-built one
            else:
                url = server.create_database(template)
            config = DatabaseConfig(driver="postgres", conn_string=url, auto_migrate=True)
            open_store(config).close()
        except Exception as exc:  # noqa: BLE001 - reported as the reason PostgreSQL is unusable
            self.postgres = PostgresRun(source=server.source, error=f"template setup failed: {exc}")
            return
        self.postgres = PostgresRun(
            admin_url=server.admin_url,
            source=server.source,
            template=template,
            prefix=prefix,
            seconds=time.perf_counter() - started,
        )

    def shutdown(self) -> None:
        """Drop the template and stop a server this process started (both kept with
        ``reuse_db``)."""
        if self.server is None:
            return
        if self.reuse_db:
            self.server = None
            return
        if self.postgres is not None and self.postgres.template:
            # The server may be going away anyway; a failed drop must not fail the run.
            with contextlib.suppress(Exception):
                self.server.drop_database(self.postgres.template)
        self.server.stop()
        self.server = None

    def unavailable(self, backend: str) -> str:
        """Why ``backend`` cannot run, or "" when it can."""
        if backend != POSTGRES:
            return ""
        if self.postgres is None:
            return "no PostgreSQL: the postgres backend was not provisioned"
        return f"no PostgreSQL: {self.postgres.error}" if self.postgres.error else ""


def history_fingerprint() -> str:
    """A short hash of compozy's migration history: every revision file and SQL file."""
    from compozy.store.migrations import SCRIPT_LOCATION

    digest = hashlib.sha256()
    for path in sorted(SCRIPT_LOCATION.glob("*/*")):
        if path.suffix in (".py", ".sql"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


STATE_KEY = pytest.StashKey[KitState]()
"""Where the plugin keeps the run's ``KitState`` in ``config.stash``."""
QUERIES_KEY = pytest.StashKey[Callable[[], str]]()
"""Where ``compozy_queries`` leaves, on the test item, how to list the statements it saw."""

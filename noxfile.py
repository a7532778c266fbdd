"""Sessions: ``nox`` runs lint, the suite on SQLite and on PostgreSQL, then the coverage gates."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["lint", "test-sqlite", "test-postgres", "coverage"]
nox.options.default_venv_backend = "venv"

# Branch coverage gates, enforced by the coverage session on the combined data of both backends.
TOTAL_GATE = 90
STORE_GATE = 95


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


def _pytest(session: nox.Session, backend_args: list[str], data: str) -> None:
    for stale in glob.glob(f".coverage.{data}*"):
        os.remove(stale)
    # `coverage run` (not pytest-cov) so the plugin's own import-time code is measured too:
    # pytest imports entry-point plugins before pytest-cov could start.
    session.run(
        "coverage",
        "run",
        "--parallel-mode",
        "-m",
        "pytest",
        *backend_args,
        *session.posargs,
        env={"COVERAGE_FILE": f".coverage.{data}"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy --strict, and the CI workflow against GitHub's schema."""
    _install(session)
    # The schema ships inside check-jsonschema, so this works offline.
    session.install("check-jsonschema")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "compozy", "compozy_testkit")
    session.run(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        ".github/workflows/ci.yml",
    )


@nox.session(name="test-sqlite")
def test_sqlite(session: nox.Session) -> None:
    """The whole suite on in-memory SQLite and a SQLite file."""
    _install(session)
    _pytest(session, ["--compozy-backend", "sqlite", "--compozy-backend", "sqlite-file"], "sqlite")


@nox.session(name="test-postgres")
def test_postgres(session: nox.Session) -> None:
    """The whole suite on PostgreSQL (URL, throwaway local cluster or testcontainers)."""
    _install(session)
    _pytest(session, ["--compozy-backend", "postgres", "--compozy-require-postgres"], "postgres")


@nox.session
def coverage(session: nox.Session) -> None:
    """Combine both backends' data and enforce the gates."""
    session.install("coverage[toml]")
    session.run("coverage", "combine", "--keep", *glob.glob(".coverage.*"))
    session.run("coverage", "report", f"--fail-under={TOTAL_GATE}")
    session.run("coverage", "report", "--include=compozy/store/*", f"--fail-under={STORE_GATE}")
    session.run("coverage", "xml", "-q")

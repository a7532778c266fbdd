"""Sessions: ``nox`` runs lint, the whole suite on every backend in one run (``tests``), the
downstream example, then the coverage gates. ``test-sqlite`` and ``test-postgres`` run the suite
on one kind of database each (the CI matrix runs them on separate machines)."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "downstream", "coverage"]
# uv when nox can find it (installed beside nox, as .ci/run does, or on PATH): an environment is
# then made and filled in seconds, where pip takes minutes; plain venv + pip otherwise.
nox.options.default_venv_backend = "uv|venv"

# Branch coverage gates, enforced by the coverage session on the combined data of both backends.
# The product gate leaves out the contract suite's test bodies (compozy_testkit/contract), which
# the tests run by construction and would otherwise carry the total.
PRODUCT_GATE = 90
STORE_GATE = 95
CONTRACT_BODIES = "compozy_testkit/contract/*"

ROOT = Path(__file__).resolve().parent
# Each test session's coverage data: ``tests`` has every backend, the other two one kind each.
COVERAGE_DATA = ("all", "sqlite", "postgres")
# pytest-xdist: one worker per core.
XDIST = ["-n", "auto", "--dist", "worksteal"]


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


def _pytest(session: nox.Session, backend_args: list[str], data: str) -> None:
    """The suite under coverage, on pytest-xdist workers, its data in .coverage.<data>.*"""
    # A run replaces the data of a run that covered the same backends: ``tests`` covers all.
    stale = COVERAGE_DATA if data == "all" else (data, "all")
    for name in stale:
        for path in glob.glob(str(ROOT / f".coverage.{name}*")):
            os.remove(path)
    # `coverage run` (not pytest-cov) so the plugin's own import-time code is measured too:
    # pytest imports entry-point plugins before pytest-cov could start. The xdist workers (and
    # any Python a test starts) are measured from their first line by coverage's subprocess
    # patch ([tool.coverage.run] patch in pyproject.toml); the data file is an absolute path
    # because they may run in other folders.
    session.run(
        "coverage",
        "run",
        "--parallel-mode",
        "-m",
        "pytest",
        *XDIST,
        *backend_args,
        *session.posargs,
        env={"COVERAGE_FILE": str(ROOT / f".coverage.{data}")},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy --strict (the packages and the tests), the architecture
    (import-linter's contracts in pyproject.toml), and the workflow files against GitHub's
    schema."""
    _install(session)
    # The schema ships inside check-jsonschema, so this works offline.
    session.install("check-jsonschema")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "compozy", "compozy_testkit")
    # The tests too, so that their annotations mean something (cli_support is imported by name).
    session.run(
        "mypy",
        "--strict",
        "--explicit-package-bases",
        "tests",
        env={"MYPYPATH": "tests/integration"},
    )
    session.run("lint-imports", "--no-logo")
    session.run(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        ".github/workflows/ci.yml",
        ".github/workflows/compozy-testkit.yml",
        "examples/downstream/.github/workflows/tests.yml",
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on in-memory SQLite, a SQLite file and PostgreSQL, in one run: the tests
    that use no database run once."""
    _install(session)
    _pytest(session, ["--compozy-backend", "all", "--compozy-require-postgres"], "all")


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


DOWNSTREAM_EXAMPLE = ROOT / "examples" / "downstream"
# Without posargs the example must pass on every backend, PostgreSQL included.
DOWNSTREAM_DEFAULT_ARGS = ["--compozy-backend", "all", "--compozy-require-postgres"]
PLAIN_TEST = "def test_nothing() -> None:\n    assert True\n"
# Asks for a factory fixture where factory-boy is absent: that test must fail saying what to do.
FACTORY_TEST = "def test_factory(workflow_factory: object) -> None:\n    pass\n"
FACTORY_HINT = "compozy's factories need factory-boy: pip install 'compozy[testkit]'"


def _install_local(session: nox.Session, path: str, name: str) -> None:
    """A non-editable install of the project at ``path``, built from the files as they are now:
    uv would otherwise reuse a wheel it built from an earlier state of the same folder."""
    refresh = ["--refresh-package", name, "--reinstall-package", name]
    session.install(*(refresh if session.venv_backend == "uv" else []), path)


@nox.session
def downstream(session: nox.Session) -> None:
    """A downstream project's view: pytest still works without the testkit extra, and the
    example project (contract suite + its own test) passes with it; posargs go to its pytest."""
    # 1. compozy alone. The plugin is registered through the pytest11 entry point all the same,
    # so a project that never asked for the testkit must still get a working pytest run.
    # A non-editable install builds in build/; a stale one could ship modules since deleted.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    _install_local(session, str(ROOT), "compozy")
    session.install("pytest")
    # A reused venv still has the previous run's testkit extra; this half needs it absent.
    if session.venv_backend == "uv":
        session.run("uv", "pip", "uninstall", "--quiet", "factory-boy")
    else:
        session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "factory-boy")
    session.run(
        "python",
        "-c",
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('factory') is not None)",
    )
    project = Path(session.create_tmp()) / "plain-project"
    project.mkdir(exist_ok=True)
    # Its own ini file, or pytest would take this repository's pyproject.toml as its config.
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_nothing.py").write_text(PLAIN_TEST)
    (project / "factory_fixture.py").write_text(FACTORY_TEST)  # not test_*: run by name below
    with session.chdir(project):
        output = str(session.run("pytest", "-p", "no:cacheprovider", silent=True))
        session.log(output)
        plugins = next((ln for ln in output.splitlines() if ln.startswith("plugins:")), "")
        if "compozy" not in plugins or "1 passed" not in output:
            session.error("the plain project's run did not load the compozy plugin and pass 1 test")
        failing = ["pytest", "-p", "no:cacheprovider", "--compozy-backend", "sqlite"]
        output = str(session.run(*failing, "factory_fixture.py", success_codes=[1], silent=True))
        if FACTORY_HINT not in output:
            session.log(output)
            session.error("a factory fixture without factory-boy did not fail with the hint")

    # 2. compozy with the testkit extra, then the example, which depends on compozy[testkit].
    session.install("-e", f"{ROOT}[testkit]")
    shutil.rmtree(DOWNSTREAM_EXAMPLE / "build", ignore_errors=True)
    _install_local(session, str(DOWNSTREAM_EXAMPLE), "compozy-downstream-example")
    with session.chdir(DOWNSTREAM_EXAMPLE):
        session.run("pytest", *(session.posargs or DOWNSTREAM_DEFAULT_ARGS))


@nox.session
def coverage(session: nox.Session) -> None:
    """Combine both backends' data and enforce the gates."""
    session.install("coverage[toml]")
    parts = [path for name in COVERAGE_DATA for path in glob.glob(f".coverage.{name}.*")]
    if not parts:
        session.error("no coverage data: run the tests session (or test-sqlite and test-postgres)")
    # A data file name of its own: `coverage report` would otherwise combine (and delete) the
    # per-backend files it finds next to .coverage, and a second run would have nothing left.
    env = {"COVERAGE_FILE": ".coverage-combined"}
    session.run("coverage", "combine", "--keep", *parts, env=env)
    session.log("everything measured, contract bodies included (no gate):")
    session.run("coverage", "report", "--format=total", env=env)
    session.log(f"the product, compozy and the testkit's machinery (gate {PRODUCT_GATE}%):")
    session.run(
        "coverage",
        "report",
        f"--omit={CONTRACT_BODIES}",
        f"--fail-under={PRODUCT_GATE}",
        env=env,
    )
    session.log(f"the store (gate {STORE_GATE}%):")
    session.run(
        "coverage", "report", "--include=compozy/store/*", f"--fail-under={STORE_GATE}", env=env
    )
    session.run("coverage", "xml", "-q", env=env)


# Mutation testing: not in nox.options.sessions (minutes, not seconds); run it as `nox -s mutants`.
# What is mutated and which tests run is [tool.mutmut] in pyproject.toml.
MUTMUT = "mutmut>=3.8,<4"
MUTANTS_COPY = ("compozy", "compozy_testkit", "pyproject.toml", "tests/contract")


@nox.session
def mutants(session: nox.Session) -> None:
    """mutmut over the store's repositories and the domain, against the contract suite on
    in-memory SQLite; posargs go to `mutmut run` (e.g. a mutant name glob)."""
    _install(session)
    session.install(MUTMUT)
    # mutmut writes its mutants/ tree and its results beside pyproject.toml: give it a scratch
    # copy of the sources and the contract, never the checkout.
    work = Path(session.create_tmp()) / "mutmut"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in MUTANTS_COPY:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, work / name)
        else:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, work / name, ignore=ignore)
    with session.chdir(work):
        session.run("mutmut", "run", "--max-children", str(os.cpu_count() or 2), *session.posargs)
        # Every surviving mutant, by name: `mutmut show NAME` in that folder prints its diff.
        session.run("mutmut", "results")
    session.log(f"mutmut's results are in {work}")

"""The compozy pytest plugin: options, backend selection and PostgreSQL provisioning.

Registered through the ``pytest11`` entry point. Only pytest and the standard library are
imported at load time, so a project that installed ``compozy`` without the ``testkit`` extra
still gets a working pytest run. Public fixtures live in ``compozy_testkit.fixtures``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from compozy_testkit.fixtures import *  # noqa: F403 - the public fixtures
from compozy_testkit.fixtures import _compozy_backend, _compozy_worker_databases  # noqa: F401
from compozy_testkit.session import (
    BACKENDS,
    PARITY_FIXTURE,
    POSTGRES,
    QUERIES_KEY,
    STATE_KEY,
    KitState,
    PostgresRun,
    parse_backends,
)

# The contract classes live in this package, not in the test files that subclass them: without
# this, pytest would not rewrite their asserts, and a failure would show no values. (Nothing
# above imports compozy_testkit.contract, so its modules are still to be imported.)
pytest.register_assert_rewrite("compozy_testkit.contract")

_NO_POSTGRES = "no PostgreSQL: "
MARKER = "compozy_backends"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compozy", "compozy storage backends")
    group.addoption(
        "--compozy-backend",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run backend-aware tests on NAME: {', '.join(BACKENDS)} or all; repeatable "
        "(default: ini compozy_backends, env COMPOZY_TEST_BACKENDS, else all)",
    )
    group.addoption(
        "--compozy-postgres-url",
        default=None,
        metavar="URL",
        help="PostgreSQL to test against (needs CREATE DATABASE rights); default: ini "
        "compozy_postgres_url, env COMPOZY_TEST_POSTGRES_URL, else a throwaway local cluster, "
        "else testcontainers",
    )
    group.addoption(
        "--compozy-postgres-source",
        default=None,
        choices=("auto", "local", "docker"),
        help="without a URL, start PostgreSQL from the local binaries, from Docker "
        "(testcontainers), or try both in that order (auto, the default; env "
        "COMPOZY_TEST_POSTGRES_SOURCE, ini compozy_postgres_source)",
    )
    group.addoption(
        "--compozy-require-postgres",
        action="store_true",
        default=False,
        help="fail, instead of skipping, the postgres tests when no PostgreSQL can be had "
        "(implied when CI=true)",
    )
    group.addoption(
        "--compozy-reuse-db",
        action="store_true",
        default=False,
        help="keep the migrated PostgreSQL template, and a throwaway local cluster, for the "
        "next run while the migration history is unchanged (env COMPOZY_TEST_REUSE_DB, ini "
        "compozy_reuse_db)",
    )
    group.addoption(
        "--compozy-create-db",
        action="store_true",
        default=False,
        help="with --compozy-reuse-db: build the kept template and cluster again",
    )
    group.addoption(
        "--compozy-parity-examples",
        type=int,
        default=200,
        metavar="N",
        help="random operation sequences the compozy_parity state machine tries (default 200)",
    )
    parser.addini("compozy_backends", "default backends (comma or space separated)", default="")
    parser.addini("compozy_postgres_url", "PostgreSQL URL for the postgres backend", default="")
    parser.addini("compozy_postgres_source", "auto, local or docker", default="")
    parser.addini(
        "compozy_reuse_db", "keep the PostgreSQL template between runs", type="bool", default=False
    )
    parser.addini(
        "compozy_require_postgres",
        "fail when PostgreSQL is unavailable",
        type="bool",
        default=False,
    )


_TRUE = ("1", "true", "yes")


def _setting(
    config: pytest.Config, option: str, env: str, ini: str, default: str = "", *, flag: bool = False
) -> str:
    """The command-line option, else the environment variable, else the ini key, else default.

    A source counts when its value is not blank (a repeated option's values are joined with
    commas); for a ``flag`` only a true value counts ("1", "true" or "yes" in the environment),
    and the result is "true" or "".
    """
    for value in (config.getoption(option), os.environ.get(env), config.getini(ini)):
        text = (",".join(value) if isinstance(value, list) else str(value or "")).strip()
        if flag:
            text = "true" if text.lower() in _TRUE else ""
        if text:
            return text
    return default


def _selected_backends(config: pytest.Config) -> tuple[str, ...]:
    value = _setting(
        config, "--compozy-backend", "COMPOZY_TEST_BACKENDS", "compozy_backends", "all"
    )
    try:
        return parse_backends([value])
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _postgres_source(config: pytest.Config) -> str:
    source = _setting(
        config,
        "--compozy-postgres-source",
        "COMPOZY_TEST_POSTGRES_SOURCE",
        "compozy_postgres_source",
        "auto",
    )
    if source not in ("auto", "local", "docker"):
        raise pytest.UsageError(
            f"compozy PostgreSQL source {source!r} is not one of auto, local, docker"
        )
    return source


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names, reason=''): run this test only on the named compozy backends "
        f"({', '.join(BACKENDS)}); on the others it is skipped with the reason",
    )
    config.addinivalue_line(
        "markers",
        "compozy_dataset(name): the compozy_dataset fixture gives this test a private copy of "
        "the dataset registered as name (compozy_testkit.datasets), built once per worker",
    )
    url = _setting(
        config, "--compozy-postgres-url", "COMPOZY_TEST_POSTGRES_URL", "compozy_postgres_url"
    )
    # CI=true (GitHub Actions, most CI systems) implies --compozy-require-postgres.
    required = _setting(
        config, "--compozy-require-postgres", "CI", "compozy_require_postgres", flag=True
    )
    state = KitState(
        backends=_selected_backends(config),
        require_postgres=bool(required),
        postgres_url=url or None,
        postgres_source=_postgres_source(config),
        reuse_db=bool(
            _setting(
                config, "--compozy-reuse-db", "COMPOZY_TEST_REUSE_DB", "compozy_reuse_db", flag=True
            )
        ),
        create_db=bool(config.getoption("--compozy-create-db")),
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        data = workerinput.get("compozy_postgres")
        state.postgres = PostgresRun.from_workerinput(data) if data else None
    elif POSTGRES in state.backends and _distributing(config) and not config.option.collectonly:
        # xdist workers collect, the controller does not: it cannot wait to see whether a
        # test needs PostgreSQL, and one server must be ready before the workers start.
        state.provision_postgres()
    config.stash[STATE_KEY] = state
    if workerinput is None:  # the controller (or a run without xdist) sees every report
        config.pluginmanager.register(_Timings(state), "compozy-timings")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(state), "compozy-xdist")


def _distributing(config: pytest.Config) -> bool:
    """True on an xdist controller that will start workers."""
    return bool(getattr(config.option, "numprocesses", None)) or (
        getattr(config.option, "dist", "no") != "no"
    )


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("compozy_backend") if callspec is not None else None


def _compares_with_postgres(item: pytest.Item, state: KitState) -> bool:
    """A compozy_parity test, in a run that selected PostgreSQL (else it is skipped)."""
    return POSTGRES in state.backends and PARITY_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE_KEY]
    wanted = [
        item
        for item in items
        if (_backend_of(item) == POSTGRES or _compares_with_postgres(item, state))
        and item.get_closest_marker("skip") is None
    ]
    if not wanted:
        return  # nothing collected needs PostgreSQL, so none is started
    if state.postgres is None and not hasattr(config, "workerinput"):
        state.provision_postgres()
        state.report_after_collection = True
    reason = state.unavailable(POSTGRES)
    if reason and not state.require_postgres:
        # A skip mark (not pytest.skip in a fixture) lets pytest fold every such skip into one
        # summary line per file; when PostgreSQL is required, compozy_backend fails instead.
        for item in wanted:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    backend = _backend_of(item)
    if backend is not None:  # user_properties travel to the xdist controller with the report
        report.user_properties.append((_BACKEND_PROPERTY, backend))
    listing = item.stash.get(QUERIES_KEY, None)
    if listing is not None and report.failed and report.when == "call":
        report.sections.append(("compozy queries", listing() or "(none)"))
    # Every "no PostgreSQL" skip is reported at one place, so pytest folds them all into one
    # summary line (it keeps parametrised tests' lines apart otherwise).
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and _NO_POSTGRES in str(longrepr[2]):
        report.longrepr = (__file__, None, longrepr[2])
    return report


_BACKEND_PROPERTY = "compozy_backend"


class _Timings:
    """Tests and seconds per backend, printed at the end of the run: what SQLite saves."""

    def __init__(self, state: KitState) -> None:
        self._state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        backend = dict(report.user_properties).get(_BACKEND_PROPERTY)
        if backend is None:
            return
        counted = self._state.timings.setdefault(str(backend), [0, 0.0])
        counted[1] += report.duration
        if report.when == "call" or (report.when == "setup" and report.skipped):
            counted[0] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self._state.timings:
            return
        parts = [
            f"{backend} {int(tests)} tests in {seconds:.1f}s"
            for backend, (tests, seconds) in sorted(self._state.timings.items())
        ]
        terminalreporter.write_line("compozy time per backend: " + ", ".join(parts))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # Where PostgreSQL came from, when it was started after the header was printed.
    state = session.config.stash[STATE_KEY]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if state.report_after_collection and reporter is not None:
        reporter.write_line(_postgres_line(state))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.shutdown()


class _XdistHooks:
    """Hand the controller's PostgreSQL to each worker (registered only when xdist is there)."""

    def __init__(self, state: KitState) -> None:
        self._state = state

    def pytest_configure_node(self, node: Any) -> None:
        if self._state.postgres is not None:
            node.workerinput["compozy_postgres"] = self._state.postgres.to_workerinput()


def _postgres_line(state: KitState) -> str:
    pg = state.postgres
    if pg is None:
        return ""
    if pg.error:
        what = "fail" if state.require_postgres else "be skipped"
        return f"compozy postgres: unavailable, postgres tests will {what}: {pg.error}"
    return f"compozy postgres: {pg.source}, ready in {pg.seconds:.2f}s (server + migrated template)"


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[STATE_KEY]
    lines = [f"compozy backends: {', '.join(state.backends) or 'none'}"]
    if state.postgres is not None and not hasattr(config, "workerinput"):
        lines.append(_postgres_line(state))
    elif POSTGRES in state.backends:
        lines.append("compozy postgres: started after collection, if a collected test needs it")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "compozy_backend" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE_KEY]
    marker = metafunc.definition.get_closest_marker(MARKER)
    params = []
    for backend in state.backends:
        marks = []
        if marker is not None and backend not in marker.args:
            reason = marker.kwargs.get("reason") or f"runs only on {', '.join(marker.args)}"
            marks.append(pytest.mark.skip(reason=f"{backend}: {reason}"))
        params.append(pytest.param(backend, id=backend, marks=marks))
    if not params:
        params = [
            pytest.param(
                "none",
                id="no-backend",
                marks=pytest.mark.skip(reason="no compozy backend selected"),
            )
        ]
    metafunc.parametrize("compozy_backend", params, indirect=True, scope="function")

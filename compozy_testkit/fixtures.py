"""The public fixtures of the compozy testkit.

Every backend-aware fixture depends on ``compozy_backend``, which the plugin parametrises over
the selected backends, so a test using any of them runs once per backend (``test_x[sqlite]``,
``test_x[postgres]``). A downstream suite may override ``compozy_store`` to put another
implementation of the repository protocols under the contract tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from compozy_testkit.session import BACKENDS, POSTGRES, QUERIES_KEY, STATE_KEY, KitState

if TYPE_CHECKING:
    from compozy.auth import AuthRepository
    from compozy.store import Store
    from compozy.task import TaskRepository
    from compozy.workflow import WorkflowRepository
    from compozy_testkit.databases import Backend, TestDatabase, WorkerDatabases
    from compozy_testkit.parity import Parity
    from compozy_testkit.queries import QueryLog

__all__ = [
    "api_key_factory",
    "auth_repo",
    "compozy_backend",
    "compozy_database",
    "compozy_dataset",
    "compozy_empty_database",
    "compozy_empty_database_on",
    "compozy_factories",
    "compozy_parity",
    "compozy_queries",
    "compozy_store",
    "task_factory",
    "task_repo",
    "user_factory",
    "workflow_factory",
    "workflow_repo",
]


@pytest.fixture(scope="session")
def _compozy_worker_databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerDatabases]:
    # Imported here, not at the top: the plugin loads this module with the standard library only.
    from compozy_testkit.databases import WorkerDatabases

    databases = WorkerDatabases(tmp_path_factory.mktemp("compozy"), request.config.stash[STATE_KEY])
    yield databases
    databases.close()


@pytest.fixture
def compozy_backend(request: pytest.FixtureRequest) -> str:
    """The backend this test runs on: ``sqlite`` (in memory), ``sqlite-file`` or ``postgres``."""
    backend: str = getattr(request, "param", BACKENDS[0])
    # Unless the backend is required, the plugin has already marked these tests skipped.
    reason = request.config.stash[STATE_KEY].unavailable(backend)
    if reason:
        pytest.fail(f"{reason} (required: CI=true or --compozy-require-postgres)", pytrace=False)
    return backend


@pytest.fixture
def _compozy_backend(compozy_backend: str, _compozy_worker_databases: WorkerDatabases) -> Backend:
    """The worker's object for this test's backend: the one place a backend name is resolved."""
    return _compozy_worker_databases.backend(compozy_backend)


def _test_database(
    backend: Backend, tmp_path: Path | None, *, migrated: bool
) -> Iterator[TestDatabase]:
    from compozy_testkit.databases import TestDatabase

    with TestDatabase(backend, tmp_path, migrated=migrated) as database:
        yield database


@pytest.fixture
def compozy_database(_compozy_backend: Backend) -> Iterator[TestDatabase]:
    """A clean, migrated database on the current backend; ``.open()`` gives more Stores on it."""
    # No tmp_path: the worker's database is reused, and a folder per test costs milliseconds.
    yield from _test_database(_compozy_backend, None, migrated=True)


@pytest.fixture
def compozy_empty_database(_compozy_backend: Backend, tmp_path: Path) -> Iterator[TestDatabase]:
    """A database with no schema on the current backend (for migration tests)."""
    yield from _test_database(_compozy_backend, tmp_path, migrated=False)


@pytest.fixture
def compozy_dataset(
    request: pytest.FixtureRequest, _compozy_backend: Backend, tmp_path: Path
) -> Iterator[Store]:
    """A Store on a private copy of the dataset named by ``@pytest.mark.compozy_dataset(name)``
    (registered with ``compozy_testkit.datasets.dataset``), on the current backend. The first
    test that asks for a dataset on a worker and backend builds it; the others copy it."""
    from compozy_testkit.datasets import DATASETS

    marker = request.node.get_closest_marker("compozy_dataset")
    if marker is None or len(marker.args) != 1:
        pytest.fail(
            "compozy_dataset needs @pytest.mark.compozy_dataset(name) on the test", pytrace=False
        )
    name = marker.args[0]
    recipe = DATASETS.get(name)
    if recipe is None:
        known = ", ".join(sorted(DATASETS)) or "none"
        pytest.fail(
            f"no compozy dataset named {name!r} (registered: {known}); register it with "
            "compozy_testkit.datasets.dataset in a conftest.py",
            pytrace=False,
        )
    store, drop = _compozy_backend.dataset_store(name, recipe, tmp_path)
    yield store
    drop()


def _need_server(state: KitState, backend: str) -> None:
    """Skip the test unless the server ``backend`` was selected for the run; then skip it, or
    fail it when required, if the server could not be had."""
    if backend not in state.backends:
        pytest.skip(f"{backend} is not among the selected backends")
    reason = state.unavailable(backend)
    if reason:
        if state.require_postgres:
            pytest.fail(f"{reason} (required)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def compozy_empty_database_on(
    request: pytest.FixtureRequest,
    _compozy_worker_databases: WorkerDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], TestDatabase]]:
    """Empty databases (no schema) on any backend: ``compozy_empty_database_on("postgres")``,
    for tests that move data from one backend to another. SQLite needs nothing, so its
    databases are always given; a server backend that was not selected is skipped, and one
    that is unavailable is skipped or failed as ``compozy_backend`` does."""
    from compozy_testkit.databases import BACKEND_CLASSES, TestDatabase

    state = request.config.stash[STATE_KEY]
    made: list[TestDatabase] = []

    def empty_on(backend: str) -> TestDatabase:
        if BACKEND_CLASSES[backend].has_server:
            _need_server(state, backend)
        folder = tmp_path_factory.mktemp(f"empty-{backend}")
        database = TestDatabase(_compozy_worker_databases.backend(backend), folder, migrated=False)
        made.append(database)
        return database

    yield empty_on
    for database in made:
        database.close()


@pytest.fixture
def compozy_store(compozy_database: TestDatabase) -> Store:
    """A migrated Store on the current backend, with no rows; wiped again after the test."""
    return compozy_database.store()


@pytest.fixture
def compozy_parity(
    request: pytest.FixtureRequest,
    _compozy_worker_databases: WorkerDatabases,
) -> Iterator[Parity]:
    """In-memory SQLite and PostgreSQL side by side: ``compozy_parity.run(fn)`` calls
    ``fn(store)`` on both and fails when they answer differently; ``run_parity_machine``
    (``compozy_testkit.parity``) drives random operation sequences through it,
    ``compozy_parity.examples`` of them (``--compozy-parity-examples``). Needs PostgreSQL
    selected and available (skipped, or failed when required, otherwise)."""
    from compozy_testkit.databases import TestDatabase
    from compozy_testkit.parity import Parity

    _need_server(request.config.stash[STATE_KEY], POSTGRES)
    databases = [
        TestDatabase(_compozy_worker_databases.backend(name), None, migrated=True)
        for name in ("sqlite", POSTGRES)
    ]

    def reset() -> None:
        for database in databases:
            database.wipe()

    parity = Parity({d.backend: d.store() for d in databases}, reset)
    parity.examples = request.config.getoption("compozy_parity_examples")
    yield parity
    for database in databases:
        database.close()


@pytest.fixture
def compozy_queries(request: pytest.FixtureRequest, compozy_store: Store) -> Iterator[QueryLog]:
    """The SQL ``compozy_store`` sends during the test; ``with compozy_queries.assert_max(n):``
    fails a block that sends more than ``n`` queries. A failed test lists them all."""
    from compozy.store.recording import record_statements
    from compozy_testkit.queries import QueryLog

    with record_statements(compozy_store) as statements:
        log = QueryLog(statements)
        request.node.stash[QUERIES_KEY] = log.report
        yield log


@pytest.fixture
def workflow_repo(compozy_store: Store) -> WorkflowRepository:
    """The workflow repository of ``compozy_store``."""
    return compozy_store.workflows


@pytest.fixture
def task_repo(compozy_store: Store) -> TaskRepository:
    """The task repository of ``compozy_store``."""
    return compozy_store.tasks


@pytest.fixture
def auth_repo(compozy_store: Store) -> AuthRepository:
    """The auth repository of ``compozy_store``."""
    return compozy_store.auth


# The factory fixtures. factory-boy is optional, so compozy_testkit.factories is imported for
# type checking only; at run time the fixtures import it lazily.
if TYPE_CHECKING:
    from compozy_testkit.factories import FactorySet


def _bind_factories(store: Store) -> FactorySet:
    """``compozy_testkit.factories.bind(store)``, or a clear failure without factory-boy."""
    # Imported here, not at the top: the plugin loads this module in every project that
    # installed compozy, with or without the testkit extra that brings factory-boy.
    missing = False
    try:
        from compozy_testkit.factories import bind
    except ModuleNotFoundError as exc:
        if exc.name != "factory":
            raise
        missing = True
    if missing:  # failed outside the except block, so the report is this one line
        pytest.fail(
            "compozy's factories need factory-boy: pip install 'compozy[testkit]'", pytrace=False
        )
    return bind(store)


@pytest.fixture
def compozy_factories(compozy_store: Store) -> FactorySet:
    """The compozy_testkit factories bound to ``compozy_store`` (needs the testkit extra)."""
    return _bind_factories(compozy_store)


def _factory_fixture(attribute: str, doc: str) -> Any:
    """A fixture giving ``compozy_factories.<attribute>``; ``doc`` is for ``pytest --fixtures``."""

    def fixture(compozy_factories: FactorySet) -> Any:
        return getattr(compozy_factories, attribute)

    fixture.__doc__ = doc
    return pytest.fixture(fixture)


# The factory classes (compozy_testkit.factories), each bound to compozy_store.
workflow_factory = _factory_fixture(
    "workflows",
    "``.create()`` stores a workflow execution in ``compozy_store``; ``.build()`` only builds.",
)
task_factory = _factory_fixture(
    "tasks",
    "``.create(workflow= | parent=)`` stores a task; ``.tree(depth=, fan_out=)`` a task tree.",
)
user_factory = _factory_fixture(
    "users", "``.create()`` stores a user in ``compozy_store``; ``.build()`` only builds."
)
api_key_factory = _factory_fixture(
    "api_keys",
    "``.create()`` stores an API key; ``.create_with_plaintext()`` also gives its plaintext.",
)

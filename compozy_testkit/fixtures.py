"""The public fixtures of the compozy testkit.

Every backend-aware fixture depends on ``compozy_backend``, which the plugin parametrises over
the selected backends, so a test using any of them runs once per backend (``test_x[sqlite]``,
``test_x[postgres]``). A downstream suite may override ``compozy_store`` to put another
implementation of the repository protocols under the contract tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from compozy_testkit.databases import TestDatabase, WorkerDatabases, WorkerPostgres
from compozy_testkit.session import postgres_unavailable

if TYPE_CHECKING:
    from compozy.auth import AuthRepository
    from compozy.store import Store
    from compozy.task import TaskRepository
    from compozy.workflow import WorkflowRepository

__all__ = [
    "api_key_factory",
    "auth_repo",
    "compozy_backend",
    "compozy_database",
    "compozy_empty_database",
    "compozy_factories",
    "compozy_store",
    "task_factory",
    "task_repo",
    "user_factory",
    "workflow_factory",
    "workflow_repo",
]


@pytest.fixture(scope="session")
def _compozy_worker_databases(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerDatabases]:
    from compozy_testkit.provision.sqlite import SQLiteTemplates

    workdir = tmp_path_factory.mktemp("compozy")
    templates = SQLiteTemplates(workdir)
    databases = WorkerDatabases(templates, workdir)
    yield databases
    databases.close()
    templates.close()


@pytest.fixture(scope="session")
def _compozy_worker_postgres(request: pytest.FixtureRequest) -> Iterator[WorkerPostgres]:
    from compozy_testkit.plugin import STATE_KEY
    from compozy_testkit.provision.postgres import PostgresServer

    run = request.config.stash[STATE_KEY].postgres
    # compozy_backend fails or skips every postgres test before it gets here without a server.
    assert run is not None
    assert not run.error
    server = PostgresServer(run.admin_url, run.source, run.seconds)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{run.prefix}_{worker}"
    url = server.create_database(name, template=run.template)
    yield WorkerPostgres(server, name, url, run.template)
    server.drop_database(name)


@pytest.fixture
def compozy_backend(request: pytest.FixtureRequest) -> str:
    """The backend this test runs on: ``sqlite`` (in memory), ``sqlite-file`` or ``postgres``."""
    from compozy_testkit.plugin import STATE_KEY

    backend: str = getattr(request, "param", "sqlite")
    if backend == "postgres":
        # Unless PostgreSQL is required, the plugin has already marked these tests skipped.
        reason = postgres_unavailable(request.config.stash[STATE_KEY])
        if reason:
            pytest.fail(
                f"{reason} (required: CI=true or --compozy-require-postgres)", pytrace=False
            )
    return backend


def _database(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, migrated: bool
) -> TestDatabase:
    postgres: WorkerPostgres | None = None
    if backend == "postgres":
        postgres = request.getfixturevalue("_compozy_worker_postgres")
    if not migrated:
        return TestDatabase(backend, tmp_path=tmp_path, postgres=postgres)
    worker: WorkerDatabases = request.getfixturevalue("_compozy_worker_databases")
    worker.postgres = postgres or worker.postgres
    return TestDatabase(backend, worker=worker)


@pytest.fixture
def compozy_database(
    compozy_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[TestDatabase]:
    """A clean, migrated database on the current backend; ``.open()`` gives more Stores on it."""
    database = _database(request, compozy_backend, tmp_path, migrated=True)
    yield database
    database.close()


@pytest.fixture
def compozy_empty_database(
    compozy_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[TestDatabase]:
    """A database with no schema on the current backend (for migration tests)."""
    database = _database(request, compozy_backend, tmp_path, migrated=False)
    yield database
    database.close()


@pytest.fixture
def compozy_store(compozy_database: TestDatabase) -> Store:
    """A migrated Store on the current backend, with no rows; wiped again after the test."""
    return compozy_database.store()


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
    from compozy_testkit.factories import (
        APIKeyFactory,
        FactorySet,
        TaskStateFactory,
        UserFactory,
        WorkflowStateFactory,
    )


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


@pytest.fixture
def workflow_factory(compozy_factories: FactorySet) -> type[WorkflowStateFactory]:
    """``.create()`` stores a workflow execution in ``compozy_store``; ``.build()`` only builds."""
    return compozy_factories.workflows


@pytest.fixture
def task_factory(compozy_factories: FactorySet) -> type[TaskStateFactory]:
    """``.create(workflow= | parent=)`` stores a task; ``.tree(depth=, fan_out=)`` a task tree."""
    return compozy_factories.tasks


@pytest.fixture
def user_factory(compozy_factories: FactorySet) -> type[UserFactory]:
    """``.create()`` stores a user in ``compozy_store``; ``.build()`` only builds."""
    return compozy_factories.users


@pytest.fixture
def api_key_factory(compozy_factories: FactorySet) -> type[APIKeyFactory]:
    """``.create()`` stores an API key; ``.create_with_plaintext()`` also gives its plaintext."""
    return compozy_factories.api_keys

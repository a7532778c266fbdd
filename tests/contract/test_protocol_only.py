"""The protocol contract tests nothing but the protocol: it passes against a wrapper that
exposes only ``compozy.repositories.RepositoryStore`` (no driver, no SQL, no ``close``).

A contract test that reached into compozy's own Store would fail here, so the contract stays
usable for another implementation that overrides ``compozy_store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from compozy.repositories import RepositoryScope, RepositoryStore
from compozy.store import Store
from compozy_testkit.contract import (
    AuthRepositoryContract,
    ConcurrencyContract,
    ExecutionQueueContract,
    PagingContract,
    TaskRepositoryContract,
    TransactionContract,
    ValueContract,
    WorkflowRepositoryContract,
)
from compozy_testkit.databases import TestDatabase

T = TypeVar("T")


class ProtocolOnly:
    """A RepositoryStore that delegates to a real Store and has nothing else."""

    def __init__(self, store: Store) -> None:
        self.workflows = store.workflows
        self.tasks = store.tasks
        self.auth = store.auth
        self.queue = store.queue
        self._store = store

    @contextmanager
    def transaction(self) -> Iterator[RepositoryScope]:
        with self._store.transaction() as tx:
            yield tx

    def run_in_transaction(self, work: Callable[[RepositoryScope], T]) -> T:
        return self._store.run_in_transaction(work)


@pytest.fixture
def compozy_store(compozy_database: TestDatabase) -> RepositoryStore:
    """The real store of this backend, seen only through the protocol."""
    return ProtocolOnly(compozy_database.store())


def test_the_wrapper_has_nothing_but_the_protocol(compozy_store: RepositoryStore) -> None:
    public = {name for name in dir(compozy_store) if not name.startswith("_")}
    assert public == {"workflows", "tasks", "auth", "queue", "transaction", "run_in_transaction"}


class TestWorkflowRepositoryThroughTheProtocol(WorkflowRepositoryContract):
    pass


class TestTaskRepositoryThroughTheProtocol(TaskRepositoryContract):
    pass


class TestAuthRepositoryThroughTheProtocol(AuthRepositoryContract):
    pass


class TestTransactionsThroughTheProtocol(TransactionContract):
    pass


class TestValuesThroughTheProtocol(ValueContract):
    pass


class TestPagingThroughTheProtocol(PagingContract):
    pass


class TestExecutionQueueThroughTheProtocol(ExecutionQueueContract):
    pass


class TestConcurrencyThroughTheProtocol(ConcurrencyContract):
    pass

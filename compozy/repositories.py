"""What any compozy store offers, as protocols: the repositories, the execution queue and
transactions. ``compozy.store.Store`` implements them on SQLAlchemy; the contract suite in
``compozy_testkit.contract`` tests any object that implements them (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from compozy.auth import AuthRepository
from compozy.task import TaskRepository
from compozy.workflow import ExecutionQueue, WorkflowRepository

__all__ = ["RepositoryScope", "RepositoryStore"]

T = TypeVar("T")


class RepositoryScope(Protocol):
    """The repositories and the queue: of a store, or bound to one of its transactions."""

    @property
    def workflows(self) -> WorkflowRepository:
        """Workflow executions."""
        ...

    @property
    def tasks(self) -> TaskRepository:
        """Task executions."""
        ...

    @property
    def auth(self) -> AuthRepository:
        """Users and API keys."""
        ...

    @property
    def queue(self) -> ExecutionQueue:
        """Claims, leases and cancellation of executions."""
        ...


class RepositoryStore(RepositoryScope, Protocol):
    """A whole store: the repositories, and transactions over them."""

    def transaction(self) -> AbstractContextManager[RepositoryScope]:
        """Commit on normal exit, roll back on exception; calls on this store's repositories
        from the same thread or asyncio task join it; a nested call opens a savepoint."""
        ...

    def run_in_transaction(self, work: Callable[[RepositoryScope], T]) -> T:
        """``work(scope)`` in one transaction, run again (bounded) after a transient conflict."""
        ...

"""The whole contract as ready-made test classes: one line runs it in a test module.

    from compozy_testkit.contract.suite import *  # noqa: F403

Every class runs on each selected backend. The tests that take ``compozy_store`` use only the
repository protocols (``compozy.repositories.RepositoryStore``), so overriding that fixture in a
conftest puts another implementation under them; the ones that take ``compozy_database`` or
``compozy_empty_database`` check compozy's own store (schema, migrations, pools, timeouts).
"""

from compozy_testkit.contract.auth import AuthRepositoryContract
from compozy_testkit.contract.concurrency import ConcurrencyContract
from compozy_testkit.contract.migrations import MigrationContract
from compozy_testkit.contract.paging import PagingContract
from compozy_testkit.contract.queue import ExecutionQueueContract
from compozy_testkit.contract.task import TaskRepositoryContract
from compozy_testkit.contract.transactions import TransactionContract
from compozy_testkit.contract.transfer import TransferContract
from compozy_testkit.contract.values import ValueContract
from compozy_testkit.contract.workflow import WorkflowRepositoryContract

__all__ = [
    "TestAuthRepository",
    "TestConcurrency",
    "TestExecutionQueue",
    "TestMigrations",
    "TestPaging",
    "TestTaskRepository",
    "TestTransactions",
    "TestTransfer",
    "TestValues",
    "TestWorkflowRepository",
]


class TestWorkflowRepository(WorkflowRepositoryContract):
    """``WorkflowRepository``."""


class TestTaskRepository(TaskRepositoryContract):
    """``TaskRepository``."""


class TestAuthRepository(AuthRepositoryContract):
    """``AuthRepository``."""


class TestTransactions(TransactionContract):
    """Transactions, savepoints, closing and health."""


class TestTransfer(TransferContract):
    """Export and import between every pair of backends."""


class TestValues(ValueContract):
    """Identifiers, enums, usage merging and stored values."""


class TestPaging(PagingContract):
    """Keyset pages of executions, users and API keys."""


class TestExecutionQueue(ExecutionQueueContract):
    """Claims, leases, fencing, release and cancel."""


class TestConcurrency(ConcurrencyContract):
    """Mixed workloads on threads and on processes."""


class TestMigrations(MigrationContract):
    """The schema and its migrations."""

"""compozy's contract suite, run against the store the compozy plugin provides per backend.

To put another implementation of the repository protocols under the same tests, override the
``compozy_store`` fixture in a conftest.py.
"""

from compozy_testkit.contract import (
    AuthRepositoryContract,
    ConcurrencyContract,
    ExecutionQueueContract,
    MigrationContract,
    PagingContract,
    TaskRepositoryContract,
    TransactionContract,
    ValueContract,
    WorkflowRepositoryContract,
)


class TestWorkflowRepository(WorkflowRepositoryContract):
    pass


class TestTaskRepository(TaskRepositoryContract):
    pass


class TestAuthRepository(AuthRepositoryContract):
    pass


class TestTransactions(TransactionContract):
    pass


class TestConcurrency(ConcurrencyContract):
    pass


class TestMigrations(MigrationContract):
    pass


class TestExecutionQueue(ExecutionQueueContract):
    pass


class TestPaging(PagingContract):
    pass


class TestValues(ValueContract):
    pass

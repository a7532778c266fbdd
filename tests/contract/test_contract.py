"""Run the testkit's contract suite against this repository's Store, on every selected backend."""

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


class TestValues(ValueContract):
    pass


class TestExecutionQueue(ExecutionQueueContract):
    pass


class TestPaging(PagingContract):
    pass

"""The contract suite: every rule of the repository protocols as tests, for any store.

A repository subclasses the classes below in one of its test modules; each needs only the
``compozy_store`` fixture (which the plugin provides per backend, and which a downstream
conftest may override to put another implementation under test)::

    from compozy_testkit.contract import WorkflowRepositoryContract

    class TestWorkflows(WorkflowRepositoryContract):
        pass
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
    "AuthRepositoryContract",
    "ConcurrencyContract",
    "ExecutionQueueContract",
    "MigrationContract",
    "PagingContract",
    "TaskRepositoryContract",
    "TransactionContract",
    "TransferContract",
    "ValueContract",
    "WorkflowRepositoryContract",
]

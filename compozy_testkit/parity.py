"""Differential testing: the same operations on two stores, the same outcomes.

``Parity`` runs one function on every store it holds (in-memory SQLite and PostgreSQL, from the
``compozy_parity`` fixture) and fails when the results or the errors differ, after
normalisation: the times a store stamps itself (``updated_at``, ``last_used``) are masked, and
errors compare by type (and by message for errors raised before any SQL ran).

``ParityMachine`` is a hypothesis state machine that drives random sequences of repository
operations (workflows and task trees, status changes, completions, usage merges, filters,
pages and lookups, users and keys, rolled-back transactions, invalid values) through a
``Parity``; ``run_parity_machine(parity, examples=...)`` runs it. Hypothesis shrinks a
divergence to a short sequence of steps and prints it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    rule,
    run_state_machine_as_test,
)

from compozy.auth import APIKey, Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.core import Component, ExecutionType, Page, Status
from compozy.errors import CompozyError, NotFoundError, ValidationError
from compozy.repositories import RepositoryStore
from compozy.task import TaskFilter, TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowFilter, WorkflowState, WorkflowSummary

__all__ = ["Divergence", "Parity", "ParityMachine", "run_parity_machine"]

T = TypeVar("T")

MASKED = "<stamped by the store>"
_STAMPED = frozenset({"updated_at", "last_used", "lease_expires_at", "cancel_requested_at"})
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Divergence(AssertionError):
    """Two stores answered the same call differently."""


def normalise(value: Any) -> Any:
    """``value`` as plain data, with the times a store stamps itself masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: MASKED
            if f.name in _STAMPED and getattr(value, f.name)
            else normalise(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _outcome(error: CompozyError) -> tuple[str, ...]:
    if isinstance(error, ValidationError | NotFoundError):
        return ("error", type(error).__name__, str(error))
    return ("error", type(error).__name__)


class Parity:
    """Stores that must answer alike: ``run(fn)`` calls ``fn(store)`` on each and compares."""

    def __init__(self, stores: Mapping[str, RepositoryStore], reset: Callable[[], None]) -> None:
        self.stores = dict(stores)
        self._reset = reset
        self.calls = 0
        self.examples = 200
        """How many random sequences a run of ``run_parity_machine`` should try."""

    def reset(self) -> None:
        """Delete every row of every store."""
        self._reset()

    def run(self, fn: Callable[[RepositoryStore], T]) -> T | None:
        """``fn`` on every store; ``Divergence`` unless all results (or all errors) agree.
        Returns the first store's result, or None when every store raised the same error."""
        self.calls += 1
        outcomes: dict[str, Any] = {}
        first: T | None = None
        for n, (name, store) in enumerate(self.stores.items()):
            try:
                result = fn(store)
            except CompozyError as error:
                outcomes[name] = _outcome(error)
                continue
            outcomes[name] = ("ok", normalise(result))
            if n == 0:
                first = result
        names = list(outcomes)
        for name in names[1:]:
            if outcomes[name] != outcomes[names[0]]:
                raise Divergence(
                    f"{names[0]} and {name} disagree:\n  {names[0]}: {outcomes[names[0]]!r}\n"
                    f"  {name}: {outcomes[name]!r}"
                )
        return first


_STATUS = st.sampled_from(list(Status))
_NAME = st.sampled_from(["a", "b", "copy", "ünï", "Z"])
_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_JSON = st.recursive(
    _JSON_LEAF | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_OBJECT = st.none() | st.dictionaries(st.text(max_size=4), _JSON, max_size=3)
_EMAIL = st.sampled_from(["ada@example.com", "ADA@Example.com", "bob@example.com", "zoë@例え.jp"])


# Repository calls on one id, by path from the store, named in the machine's steps.
_CALLS = {
    "workflow": (
        "workflows.get_state",
        "tasks.list_tasks_in_workflow",
        "workflows.complete_workflow",
    ),
    "task": (
        "tasks.get_state",
        "tasks.list_children",
        "tasks.get_task_tree",
        "tasks.list_children_outputs",
    ),
    "user": ("auth.get_user_by_id", "auth.list_api_keys_by_user_id", "auth.delete_user"),
    "key": ("auth.get_api_key_by_id", "auth.update_api_key_last_used", "auth.delete_api_key"),
}


def _call(store: RepositoryStore, path: str, id_: str) -> Any:
    target: Any = store
    for name in path.split("."):
        target = getattr(target, name)
    return target(id_)


class ParityMachine(RuleBasedStateMachine):
    """Random repository operations, each through ``Parity.run`` (set ``parity`` first)."""

    parity: Parity
    workflows = Bundle("workflows")
    tasks = Bundle("tasks")
    users = Bundle("users")
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0

    def _at(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock, microseconds=self.clock)

    def _run(self, fn: Callable[[RepositoryStore], T]) -> T | None:
        return self.parity.run(fn)

    @initialize()
    def start_empty(self) -> None:
        self.parity.reset()

    # --- workflows and tasks -----------------------------------------------------------------

    @rule(target=workflows, workflow_id=_NAME, status=_STATUS, input=_OBJECT)
    def add_workflow(self, workflow_id: str, status: Status, input: Any) -> Any:
        state = WorkflowState(
            workflow_id=workflow_id, status=status, input=input, created_at=self._at()
        )
        stored = self._run(lambda s: s.workflows.upsert_state(dataclasses.replace(state)))
        return stored.workflow_exec_id if stored else multiple()

    @rule(
        target=tasks,
        wf=workflows,
        parent=st.none() | tasks,
        task_id=_NAME,
        status=_STATUS,
        kind=st.sampled_from([ExecutionType.BASIC, ExecutionType.PARALLEL]),
        output=_OBJECT,
    )
    def add_task(
        self,
        wf: str,
        parent: str | None,
        task_id: str,
        status: Status,
        kind: ExecutionType,
        output: Any,
    ) -> Any:
        state = TaskState(
            task_id=task_id,
            workflow_id="w",
            workflow_exec_id=wf,
            parent_state_id=parent,
            component=Component.TASK,
            status=status,
            execution_type=kind,
            output=output,
            created_at=self._at(),
        )
        stored = self._run(lambda s: s.tasks.upsert_state(dataclasses.replace(state)))
        return stored.task_exec_id if stored else multiple()

    @rule(wf=workflows, status=_STATUS)
    def update_status(self, wf: str, status: Status) -> None:
        self._run(lambda s: s.workflows.update_status(wf, status))

    @rule(task=tasks, tokens=st.integers(0, 1000), model=st.sampled_from(["m1", "m2"]))
    def merge_usage(self, task: str, tokens: int, model: str) -> None:
        usage = UsageSummary(entries=[UsageEntry(provider="p", model=model, prompt_tokens=tokens)])
        self._run(lambda s: s.tasks.merge_usage(task, usage))

    @rule(status=st.none() | _STATUS, workflow_id=st.none() | _NAME)
    def filter_workflows(self, status: Status | None, workflow_id: str | None) -> None:
        wanted = WorkflowFilter(status=status, workflow_id=workflow_id)
        self._run(lambda s: s.workflows.list_states(wanted))

    @rule(status=st.none() | _STATUS, task_id=st.none() | _NAME)
    def filter_tasks(self, status: Status | None, task_id: str | None) -> None:
        wanted = TaskFilter(status=status, task_id=task_id)
        self._run(lambda s: s.tasks.list_states(wanted))

    @rule(limit=st.integers(1, 4))
    def walk_pages(self, limit: int) -> None:
        cursor: str | None = None
        for _ in range(6):
            page = self._run(partial(_page, limit=limit, cursor=cursor))
            if page is None or page.next_cursor is None:
                return
            cursor = page.next_cursor

    @rule(workflow_id=_NAME)
    def rolled_back(self, workflow_id: str) -> None:
        state = WorkflowState(workflow_id=workflow_id, status=Status.RUNNING, created_at=self._at())

        def write_then_fail(s: RepositoryStore) -> None:
            try:
                with s.transaction() as tx:
                    tx.workflows.upsert_state(dataclasses.replace(state))
                    raise ValidationError("roll back")
            except ValidationError:
                pass
            s.workflows.get_state(state.workflow_exec_id)  # WorkflowNotFound on every store

        self._run(write_then_fail)

    @rule(wf=workflows)
    def invalid_values(self, wf: str) -> None:
        self._run(lambda s: s.workflows.update_status(wf, "DONE"))  # type: ignore[arg-type]
        self._run(lambda s: s.tasks.get_task_tree(wf, max_depth=-1))

    # --- users and keys ------------------------------------------------------------------------

    @rule(target=users, email=_EMAIL, admin=st.booleans())
    def add_user(self, email: str, admin: bool) -> Any:
        user = User(email=email, role=Role.ADMIN if admin else Role.USER, created_at=self._at())
        stored = self._run(lambda s: s.auth.create_user(dataclasses.replace(user)))
        return stored.id if stored else multiple()

    @rule(email=_EMAIL)
    def find_user(self, email: str) -> None:
        self._run(lambda s: s.auth.get_user_by_email(email))
        self._run(lambda s: s.auth.list_users())

    @rule(target=keys, user=users)
    def add_key(self, user: str) -> Any:
        key: APIKey = new_api_key(user, bcrypt_rounds=TEST_BCRYPT_ROUNDS)[0]
        key = dataclasses.replace(key, created_at=self._at())
        stored = self._run(lambda s: s.auth.create_api_key(dataclasses.replace(key)))
        return stored.id if stored else multiple()

    @rule(
        target_call=st.one_of(
            st.tuples(workflows, st.sampled_from(_CALLS["workflow"])),
            st.tuples(tasks, st.sampled_from(_CALLS["task"])),
            st.tuples(users, st.sampled_from(_CALLS["user"])),
            st.tuples(keys, st.sampled_from(_CALLS["key"])),
        )
    )
    def call_on_one(self, target_call: tuple[str, str]) -> None:
        """One repository call on one stored id (``_CALLS``)."""
        id_, call = target_call
        self._run(partial(_call, path=call, id_=id_))


def _page(store: RepositoryStore, *, limit: int, cursor: str | None) -> Page[WorkflowSummary]:
    return store.workflows.list_page(limit=limit, cursor=cursor)


def run_parity_machine(parity: Parity, *, examples: int, steps: int = 25, **options: Any) -> None:
    """Run ``ParityMachine`` on ``parity`` for ``examples`` random sequences of up to ``steps``
    operations; a ``Divergence`` fails it with the shrunk sequence printed (and in the
    exception's notes). ``options`` go to hypothesis' ``settings`` (``derandomize=True``...)."""

    class Machine(ParityMachine):
        pass

    Machine.parity = parity
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            **options,
        ),
    )

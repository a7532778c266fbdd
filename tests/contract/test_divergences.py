"""The contract must see divergences: each wrapper here is the real store with one injected bug,
and the contract test beside it must fail on it (and pass on the same wrapper without the bug).

These are the blind spots issue 8 found: TaskFilter fields that could be ignored, a deleted API
key still found by fingerprint, and id tie-breaks of the task tree and children lookups.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, cast

import pytest

from compozy.store import Store
from compozy.task import TaskFilter, TaskState
from compozy_testkit.contract import AuthRepositoryContract, TaskRepositoryContract

ContractTest = Callable[[Store], None]


class _Delegate:
    """Forwards every attribute it does not define itself to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _store(real: Store, **repositories: Any) -> Store:
    """The real store with some repositories replaced."""
    store = _Delegate(real)
    for name, repository in repositories.items():
        setattr(store, name, repository)
    return cast(Store, store)


class _IgnoresFilterField(_Delegate):
    """list_states drops one field of the filter."""

    def __init__(self, inner: Any, field: str) -> None:
        super().__init__(inner)
        self._field = field

    def list_states(self, filter: TaskFilter | None = None) -> list[TaskState]:
        if filter is not None:
            filter = dataclasses.replace(filter, **{self._field: None})
        return cast(list[TaskState], self._inner.list_states(filter))


class _ReversedTieBreaks(_Delegate):
    """Breaks created_at ties on the smallest task_exec_id instead of the greatest/ascending."""

    def get_task_tree(self, root_state_id: str, max_depth: int = 100) -> list[TaskState]:
        tree = self._inner.get_task_tree(root_state_id, max_depth)
        runs = itertools.groupby(tree, key=lambda t: t.created_at)
        return [t for _, run in runs for t in reversed(list(run))]

    def _children_ties_reversed(self, parent_state_id: str) -> list[TaskState]:
        children = sorted(
            self._inner.list_children(parent_state_id), key=lambda t: t.task_exec_id, reverse=True
        )
        return sorted(children, key=lambda t: t.created_at)  # stable: ties keep descending ids

    def get_child_by_task_id(self, parent_state_id: str, task_id: str) -> TaskState:
        matching = [
            t for t in self._children_ties_reversed(parent_state_id) if t.task_id == task_id
        ]
        if not matching:
            return cast(TaskState, self._inner.get_child_by_task_id(parent_state_id, task_id))
        return matching[-1]

    def list_children_outputs(self, parent_state_id: str) -> dict[str, dict[str, Any]]:
        return {
            t.task_id: t.output
            for t in self._children_ties_reversed(parent_state_id)
            if t.output is not None
        }


class _StaleFingerprints(_Delegate):
    """Caches keys by fingerprint and never forgets them (a deleted key keeps working)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._seen: dict[bytes, Any] = {}

    def get_api_key_by_fingerprint(self, fingerprint: bytes) -> Any:
        if fingerprint not in self._seen:
            self._seen[fingerprint] = self._inner.get_api_key_by_fingerprint(fingerprint)
        return self._seen[fingerprint]


_TASKS = TaskRepositoryContract()
_AUTH = AuthRepositoryContract()
FILTER_FIELDS = [field.name for field in dataclasses.fields(TaskFilter)]

# (bug id, a wrapper factory over the real store, the contract test that must catch it)
DIVERGENCES: list[tuple[str, Callable[[Store], Store], ContractTest]] = [
    *(
        (
            f"ignores-filter-{field}",
            lambda real, field=field: _store(real, tasks=_IgnoresFilterField(real.tasks, field)),
            _TASKS.test_list_states_honours_every_filter_field_on_its_own,
        )
        for field in FILTER_FIELDS
    ),
    (
        "task-tree-ties-reversed",
        lambda real: _store(real, tasks=_ReversedTieBreaks(real.tasks)),
        _TASKS.test_get_task_tree_breaks_ties_on_task_exec_id_by_code_point,
    ),
    (
        "children-ties-reversed",
        lambda real: _store(real, tasks=_ReversedTieBreaks(real.tasks)),
        _TASKS.test_children_tie_on_created_at_is_broken_by_the_greatest_task_exec_id,
    ),
    (
        "deleted-key-found-by-fingerprint",
        lambda real: _store(real, auth=_StaleFingerprints(real.auth)),
        _AUTH.test_a_deleted_api_key_is_no_longer_found_by_fingerprint,
    ),
    (
        "deleted-users-key-found-by-fingerprint",
        lambda real: _store(real, auth=_StaleFingerprints(real.auth)),
        _AUTH.test_the_keys_of_a_deleted_user_are_no_longer_found_by_fingerprint,
    ),
]
IDS = [bug for bug, _, _ in DIVERGENCES]


@pytest.mark.parametrize(("bug", "wrap", "contract_test"), DIVERGENCES, ids=IDS)
def test_the_contract_fails_on_the_divergent_store(
    compozy_store: Store, bug: str, wrap: Callable[[Store], Store], contract_test: ContractTest
) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        contract_test(wrap(compozy_store))


@pytest.mark.parametrize(("bug", "wrap", "contract_test"), DIVERGENCES, ids=IDS)
def test_the_same_contract_test_passes_through_a_faithful_wrapper(
    compozy_store: Store, bug: str, wrap: Callable[[Store], Store], contract_test: ContractTest
) -> None:
    # The control: forwarding alone does not fail the test, so the failure above is the bug's.
    contract_test(_store(compozy_store))

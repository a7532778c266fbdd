"""The vector store contract must see a provider that breaks the one semantics: each wrapper
here is the filesystem store with one of the disagreements the Go providers had (research
next-wave.md, B.1), and the contract test beside it must fail on it (and pass on a faithful
wrapper, so the failure is the bug's)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from compozy.knowledge import Match, Metadata, VectorStore
from compozy.knowledge.providers.filesystem import FilesystemVectorStore
from compozy_testkit.vectors import VectorStoreContract, VectorStoreFactory

ContractTest = Callable[[VectorStoreFactory], None]
EVERYTHING = 10_000


class _Delegate:
    """Forwards every attribute it does not define itself to ``inner``."""

    def __init__(self, inner: VectorStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RedisRawScores(_Delegate):
    """Returns Redis VSIM's (1 + cos) / 2 as the score, and applies min_score to it."""

    def search(self, vector: Sequence[float], *, top_k: int = 5, **kw: Any) -> list[Match]:
        min_score = kw.pop("min_score", None)
        found = [
            Match(m.id, (1 + m.score) / 2, m.text, m.metadata)
            for m in self._inner.search(vector, top_k=top_k, **kw)
        ]
        return [m for m in found if min_score is None or m.score >= min_score]


class _FiltersAsText(_Delegate):
    """Compares metadata as text (pgvector's ``->>``, the Go Redis provider's fmt.Sprint)."""

    def _all(self, where: Metadata | None) -> list[Match]:
        probe = [1.0] + [0.0] * (self._inner.dimension - 1)
        found = self._inner.search(probe, top_k=EVERYTHING, min_score=-1.0)
        text = {key: str(value) for key, value in (where or {}).items()}
        return [m for m in found if all(str(m.metadata.get(k)) == v for k, v in text.items())]

    def search(self, vector: Sequence[float], *, top_k: int = 5, **kw: Any) -> list[Match]:
        where = kw.pop("where", None)
        if not where:
            return self._inner.search(vector, top_k=top_k, **kw)
        keep = {m.id for m in self._all(where)}
        found = self._inner.search(vector, top_k=EVERYTHING, **kw)
        return [m for m in found if m.id in keep][:top_k]

    def count(self, where: Metadata | None = None) -> int:
        return len(self._all(where)) if where else self._inner.count()

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        doomed = {m.id for m in self._all(where)} if where else None
        if ids is not None:
            doomed = set(ids) if doomed is None else doomed & set(ids)
        self._inner.delete(sorted(doomed or ()))


class _DeleteUnion(_Delegate):
    """Deletes the ids OR what matches the filter (the Go Redis provider's union)."""

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        if ids is not None:
            self._inner.delete(ids)
        if where:
            self._inner.delete(where=where)


class _TiesInProviderOrder(_Delegate):
    """Leaves equal scores in the order of the engine (here: ids descending)."""

    def search(self, vector: Sequence[float], *, top_k: int = 5, **kw: Any) -> list[Match]:
        found = self._inner.search(vector, top_k=top_k, **kw)
        runs = itertools.groupby(found, key=lambda m: m.score)
        return [m for _, run in runs for m in sorted(run, key=lambda m: m.id, reverse=True)]


_CONTRACT = VectorStoreContract()
DIVERGENCES: list[tuple[str, type[_Delegate], ContractTest]] = [
    ("redis-raw-scores", _RedisRawScores, _CONTRACT.test_scores_are_cosine_similarities),
    (
        "redis-raw-min-score",
        _RedisRawScores,
        _CONTRACT.test_min_score_keeps_matches_scoring_at_least_it,
    ),
    (
        "filters-as-text",
        _FiltersAsText,
        lambda factory: _CONTRACT.test_filters_follow_the_json_typing_rule(factory, "1", 1, False),
    ),
    (
        "filters-as-text-1-vs-1.0",
        _FiltersAsText,
        lambda factory: _CONTRACT.test_filters_follow_the_json_typing_rule(factory, 1, 1.0, True),
    ),
    (
        "delete-union",
        _DeleteUnion,
        _CONTRACT.test_delete_by_ids_and_filter_deletes_what_matches_both,
    ),
    ("ties-in-provider-order", _TiesInProviderOrder, _CONTRACT.test_equal_scores_are_ordered_by_id),
]
IDS = [bug for bug, _, _ in DIVERGENCES]


@pytest.fixture
def real_factory(tmp_path: Path) -> VectorStoreFactory:
    return lambda dimension: FilesystemVectorStore(tmp_path / "kb", dimension)


@pytest.mark.parametrize(("bug", "wrapper", "contract_test"), DIVERGENCES, ids=IDS)
def test_the_contract_fails_on_the_divergent_store(
    real_factory: VectorStoreFactory,
    bug: str,
    wrapper: type[_Delegate],
    contract_test: ContractTest,
) -> None:
    wrapped: VectorStoreFactory = lambda dimension: wrapper(real_factory(dimension))  # noqa: E731
    with pytest.raises(AssertionError):
        contract_test(wrapped)


@pytest.mark.parametrize(("bug", "wrapper", "contract_test"), DIVERGENCES, ids=IDS)
def test_the_same_contract_test_passes_through_a_faithful_wrapper(
    real_factory: VectorStoreFactory,
    bug: str,
    wrapper: type[_Delegate],
    contract_test: ContractTest,
) -> None:
    faithful: VectorStoreFactory = lambda dimension: _Delegate(real_factory(dimension))  # noqa: E731
    contract_test(faithful)

"""The vector store contract: the one semantics of ``compozy.knowledge`` as tests, for any
provider.

Subclass ``VectorStoreContract`` in a test module and give it a ``vector_store_factory``
fixture: a callable that takes a dimension and opens a store. The first call in a test must
give an empty store; every later call in the same test opens the same collection again (after
the test closed the previous store), which is how the reopening tests see persistence::

    import pytest
    from compozy.knowledge.providers.filesystem import FilesystemVectorStore
    from compozy_testkit.vectors import VectorStoreContract

    class TestMyStore(VectorStoreContract):
        @pytest.fixture
        def vector_store_factory(self, tmp_path):
            return lambda dimension: FilesystemVectorStore(tmp_path / "kb", dimension)

Set ``persistent = False`` on the subclass for a store that forgets everything when closed
(Qdrant's ``:memory:``): the reopening tests are then skipped.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from compozy.errors import CompozyError, ValidationError
from compozy.knowledge import Match, MetadataValue, Record, VectorStore

__all__ = ["VectorStoreContract", "VectorStoreFactory"]

VectorStoreFactory = Callable[[int], VectorStore]
DIM = 4
Q = [1.0, 0.0, 0.0, 0.0]
"""The query of the ordering tests; the records below score 1, 1/sqrt(2), 0 and -1 on it."""
SQRT_HALF = 1 / math.sqrt(2)
TOLERANCE = 1e-5
"""Providers keep float32 vectors: scores and vectors agree to about 1e-7 (1e-5 is ample)."""
IDS = [
    "chunk-2",
    "f6d4eadc431bc9f2a4d8c0e1b2a39f77",  # Compozy's chunk id shape (32 hex digits)
    "00000000-0000-0000-0000-000000000001",  # looks like a UUID: must not be taken for one
    "42",
    "a b/c?d=e&f#g",
    "Ünïcödé ✓ 🙂",
    "quote \" and ' and \\ backslash",
    "x" * 300,
]


def rec(record_id: str, vector: Sequence[float], text: str = "", **metadata: Any) -> Record:
    return Record(record_id, list(vector), text or f"text of {record_id}", metadata)


GEOMETRY = [
    rec("same", [1, 0, 0, 0], kind="a"),
    rec("diagonal", [1, 1, 0, 0], kind="b"),
    rec("orthogonal", [0, 1, 0, 0], kind="a"),
    rec("opposite", [-2, 0, 0, 0], kind="b"),
]
"""Scores on Q: 1, 1/sqrt(2), 0, -1 (the vectors are not unit vectors on purpose)."""


def ids_of(items: Sequence[Match | Record]) -> list[str]:
    return [item.id for item in items]


def assert_same_matches(got: Sequence[Match], expected: Sequence[Match]) -> None:
    """The same ids, texts and metadata in the same order; scores equal up to float32."""
    assert [(m.id, m.text, dict(m.metadata)) for m in got] == [
        (m.id, m.text, dict(m.metadata)) for m in expected
    ]
    assert [m.score for m in got] == pytest.approx([m.score for m in expected], abs=TOLERANCE)


class VectorStoreContract:
    """Every rule of the vector store protocol (``compozy.knowledge``), for the store that the
    subclass's ``vector_store_factory`` fixture opens."""

    persistent: ClassVar[bool] = True
    """Whether a store opened again sees what an earlier one wrote."""

    @pytest.fixture
    def vector_store_factory(self) -> VectorStoreFactory:
        pytest.fail(
            f"{type(self).__name__} must define a vector_store_factory fixture: a callable "
            "that takes a dimension and opens a store (see compozy_testkit.vectors)"
        )

    @contextlib.contextmanager
    def opened(self, factory: VectorStoreFactory, dimension: int = DIM) -> Iterator[VectorStore]:
        store = factory(dimension)
        try:
            yield store
        finally:
            store.close()

    # -- an empty store, upsert and get ---------------------------------------------------------

    def test_a_new_store_is_empty(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            assert store.dimension == DIM
            assert store.count() == 0
            assert store.count({"kind": "a"}) == 0
            assert store.search(Q, top_k=3) == []
            assert store.get(["missing"]) == []
            assert isinstance(store, VectorStore)

    def test_upsert_then_get_returns_every_field(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        metadata: dict[str, MetadataValue] = {"s": "x", "i": 7, "f": 2.5, "t": True, "n": False}
        with self.opened(vector_store_factory) as store:
            store.upsert([Record("r1", [0.5, -1.5, 2.0, 3.25], "some text", metadata)])
            [got] = store.get(["r1"])
            assert got.id == "r1"
            assert got.text == "some text"
            assert list(got.vector) == pytest.approx([0.5, -1.5, 2.0, 3.25], rel=TOLERANCE)
            assert dict(got.metadata) == metadata
            # The JSON types come back as given, not as look-alikes.
            assert [type(got.metadata[k]) for k in metadata] == [str, int, float, bool, bool]
            assert store.count() == 1

    def test_ids_round_trip_verbatim(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(
                [rec(record_id, [1, index + 1, 0, 0]) for index, record_id in enumerate(IDS)]
            )
            assert ids_of(store.get(IDS)) == IDS
            found = store.search(Q, top_k=len(IDS))
            assert sorted(ids_of(found)) == sorted(IDS)
            assert store.count() == len(IDS)

    def test_get_keeps_the_order_asked_and_leaves_out_missing_ids(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            asked = ["orthogonal", "missing", "same", "opposite"]
            assert ids_of(store.get(asked)) == ["orthogonal", "same", "opposite"]
            assert store.get([]) == []

    def test_upsert_is_idempotent(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            first = store.search(Q, top_k=10)
            store.upsert(GEOMETRY)
            assert store.count() == len(GEOMETRY)
            assert_same_matches(store.search(Q, top_k=10), first)
            assert store.get(["diagonal"]) == store.get(["diagonal"])
            assert store.get(["diagonal"])[0].metadata == {"kind": "b"}

    def test_upsert_replaces_a_record_with_the_same_id(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            store.upsert([Record("opposite", [3, 0, 0, 0], "new text", {"colour": "red"})])
            [got] = store.get(["opposite"])
            assert got.text == "new text"
            assert list(got.vector) == pytest.approx([3, 0, 0, 0], rel=TOLERANCE)
            assert dict(got.metadata) == {"colour": "red"}  # the old keys are gone
            assert store.count() == len(GEOMETRY)
            assert store.count({"kind": "b"}) == 1  # only "diagonal" still has kind b
            assert store.count({"colour": "red"}) == 1
            top = store.search(Q, top_k=2)
            assert ids_of(top) == ["opposite", "same"]  # the new vector is searched
            assert top[0].score == pytest.approx(1.0, abs=TOLERANCE)

    def test_a_repeated_id_in_one_batch_keeps_the_last(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert([rec("r", [1, 0, 0, 0], "first"), rec("r", [0, 1, 0, 0], "last")])
            assert store.count() == 1
            [got] = store.get(["r"])
            assert got.text == "last"
            assert list(got.vector) == pytest.approx([0, 1, 0, 0], abs=TOLERANCE)

    def test_upsert_of_nothing_writes_nothing(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert([])
            assert store.count() == 0

    # -- delete --------------------------------------------------------------------------------

    def test_delete_by_ids(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            store.delete(["same", "opposite"])
            assert sorted(ids_of(store.search(Q, top_k=10))) == ["diagonal", "orthogonal"]
            assert store.get(["same", "opposite"]) == []
            assert store.count() == 2

    def test_delete_by_filter(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            store.delete(where={"kind": "a"})
            assert sorted(ids_of(store.search(Q, top_k=10))) == ["diagonal", "opposite"]
            assert store.count() == 2

    def test_delete_by_ids_and_filter_deletes_what_matches_both(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            # "same" is kind a (deleted); "diagonal" is kind b (kept); "orthogonal" is kind a
            # but not listed (kept).
            store.delete(["same", "diagonal", "missing"], where={"kind": "a"})
            assert sorted(ids_of(store.search(Q, top_k=10))) == [
                "diagonal",
                "opposite",
                "orthogonal",
            ]

    def test_deleting_what_is_missing_is_no_error(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.delete(["missing"])  # an empty store
            store.delete(where={"kind": "none"})
            store.upsert(GEOMETRY)
            store.delete(["missing", "also missing"])
            store.delete([])
            store.delete(where={"kind": "none"})
            store.delete(["same"], where={"kind": "b"})
            assert store.count() == len(GEOMETRY)

    def test_delete_needs_ids_or_a_filter(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            with pytest.raises(ValidationError):
                store.delete()
            with pytest.raises(ValidationError):
                store.delete(where={})
            assert store.count() == len(GEOMETRY)

    # -- search: scores, order, ties, top_k, min_score -----------------------------------------

    def test_scores_are_cosine_similarities(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            found = store.search(Q, top_k=4)
            assert ids_of(found) == ["same", "diagonal", "orthogonal", "opposite"]
            assert [m.score for m in found] == pytest.approx(
                [1.0, SQRT_HALF, 0.0, -1.0], abs=TOLERANCE
            )
            assert all(-1.0 <= m.score <= 1.0 for m in found)
            # The query's length does not matter either.
            scaled = store.search([5.0, 0, 0, 0], top_k=4)
            assert [m.score for m in scaled] == pytest.approx([m.score for m in found], abs=1e-6)

    def test_a_match_carries_the_text_and_metadata(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert([Record("r", [1, 0, 0, 0], "the text", {"k": 1, "s": "v"})])
            [match] = store.search(Q, top_k=1)
            assert (match.id, match.text, dict(match.metadata)) == (
                "r",
                "the text",
                {"k": 1, "s": "v"},
            )

    def test_top_k_cuts_the_ordered_results(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            assert ids_of(store.search(Q, top_k=1)) == ["same"]
            assert ids_of(store.search(Q, top_k=2)) == ["same", "diagonal"]
            assert len(store.search(Q, top_k=100)) == 4
            assert ids_of(store.search([-1, 0, 0, 0], top_k=2)) == ["opposite", "orthogonal"]

    def test_equal_scores_are_ordered_by_id(self, vector_store_factory: VectorStoreFactory) -> None:
        tied = ["t-c", "t-a", "t-e", "t-b", "t-d"]
        with self.opened(vector_store_factory) as store:
            store.upsert([rec(i, [1, 1, 1, 1]) for i in tied] + [rec("best", [1, 0, 0, 0])])
            found = store.search(Q, top_k=6)
            assert ids_of(found) == ["best", "t-a", "t-b", "t-c", "t-d", "t-e"]
            # At the cut as well: the smallest ids among the tied win the places left.
            assert ids_of(store.search(Q, top_k=3)) == ["best", "t-a", "t-b"]
            assert ids_of(store.search([0, 1, 1, 1], top_k=2)) == ["t-a", "t-b"]

    def test_ids_are_ordered_by_code_point(self, vector_store_factory: VectorStoreFactory) -> None:
        tied = ["b", "B", "a", "é", "10", "9", "Z"]
        with self.opened(vector_store_factory) as store:
            store.upsert([rec(i, [0, 0, 2, 0]) for i in tied])
            assert ids_of(store.search([0, 0, 1, 0], top_k=7)) == sorted(tied)

    def test_min_score_keeps_matches_scoring_at_least_it(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            assert ids_of(store.search(Q, top_k=10, min_score=0.5)) == ["same", "diagonal"]
            assert ids_of(store.search(Q, top_k=10, min_score=-0.5)) == [
                "same",
                "diagonal",
                "orthogonal",
            ]
            assert len(store.search(Q, top_k=10, min_score=-1.0)) == 4
            assert ids_of(store.search(Q, top_k=1, min_score=0.5)) == ["same"]
            assert store.search([0, 0, 0, 1], top_k=10, min_score=0.5) == []

    @pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3"])
    def test_top_k_must_be_at_least_one(
        self, vector_store_factory: VectorStoreFactory, top_k: Any
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            with pytest.raises(ValidationError, match="top_k"):
                store.search(Q, top_k=top_k)

    @pytest.mark.parametrize("min_score", [1.5, -1.01, float("nan"), "0.5"])
    def test_min_score_must_be_a_cosine(
        self, vector_store_factory: VectorStoreFactory, min_score: Any
    ) -> None:
        with self.opened(vector_store_factory) as store, pytest.raises(ValidationError):
            store.search(Q, min_score=min_score)

    # -- filters -------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("value", "others"),
        [
            ("es", ["en", "ES", "es ", ""]),
            (3, [4, -3, 0]),
            (2.5, [2.4, 25.0, -2.5]),
            (True, [False]),
            (False, [True]),
        ],
        ids=["str", "int", "float", "bool-true", "bool-false"],
    )
    def test_a_filter_matches_equal_values_of_its_type(
        self, vector_store_factory: VectorStoreFactory, value: MetadataValue, others: list[Any]
    ) -> None:
        records = [rec("hit", [1, 0, 0, 0], v=value)]
        records += [rec(f"miss-{n}", [1, n + 1, 0, 0], v=o) for n, o in enumerate(others)]
        records.append(rec("no-key", [1, 0, 0, 0], other=value))
        with self.opened(vector_store_factory) as store:
            store.upsert(records)
            assert ids_of(store.search(Q, top_k=10, where={"v": value})) == ["hit"]
            assert store.count({"v": value}) == 1
            assert store.count() == len(records)

    @pytest.mark.parametrize(
        ("stored", "wanted", "match"),
        [
            ("1", 1, False),
            (1, "1", False),
            (True, 1, False),
            (1, True, False),
            (False, 0, False),
            (0, False, False),
            ("true", True, False),
            (1, 1.0, True),
            (2.0, 2, True),
            (0, 0.0, True),
        ],
    )
    def test_filters_follow_the_json_typing_rule(
        self, vector_store_factory: VectorStoreFactory, stored: Any, wanted: Any, match: bool
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert([rec("r", [1, 0, 0, 0], k=stored), rec("other", [0, 1, 0, 0], k="x")])
            expected = ["r"] if match else []
            assert ids_of(store.search(Q, top_k=5, where={"k": wanted})) == expected
            assert store.count({"k": wanted}) == len(expected)
            store.delete(where={"k": wanted})
            assert ids_of(store.get(["r"])) == ([] if match else ["r"])

    def test_a_record_without_the_key_does_not_match(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert([rec("with", [1, 0, 0, 0], k=""), rec("without", [1, 0, 0, 0])])
            assert ids_of(store.search(Q, where={"k": ""})) == ["with"]
            assert store.search(Q, where={"absent": "x"}) == []
            assert store.count({"absent": False}) == 0

    def test_filters_on_several_keys_must_all_match(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(
                [
                    rec("both", [1, 0, 0, 0], lang="es", n=1),
                    rec("lang", [1, 0, 0, 0], lang="es", n=2),
                    rec("n", [1, 0, 0, 0], lang="en", n=1),
                ]
            )
            assert ids_of(store.search(Q, where={"lang": "es", "n": 1})) == ["both"]
            assert store.count({"lang": "es", "n": 1}) == 1
            assert store.count({"lang": "es"}) == 2

    def test_filter_keys_and_values_are_data_not_syntax(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        # What a provider that builds filter expressions or key paths might misread.
        tricky = {
            'k" || 1 == 1 || "': "v",
            "a.b": "dotted",
            "and": "or not",
            "key with spaces": 'value with "quotes" and \\ and \' and .5 and ) ]',
            "ü": "ünï 🙂",
        }
        with self.opened(vector_store_factory) as store:
            store.upsert([rec("tricky", [1, 0, 0, 0], **tricky), rec("plain", [1, 0, 0, 0], k="v")])
            for key, value in tricky.items():
                assert ids_of(store.search(Q, where={key: value})) == ["tricky"], key
                assert store.count({key: value + "x"}) == 0, key
            assert store.count({"a": "dotted"}) == 0
            assert dict(store.get(["tricky"])[0].metadata) == tricky

    def test_search_filters_before_top_k(self, vector_store_factory: VectorStoreFactory) -> None:
        with self.opened(vector_store_factory) as store:
            # The best matches are all kind a: a filter applied after the cut would find none.
            records = [rec(f"a{n}", [1, n / 100, 0, 0], kind="a") for n in range(20)]
            records.append(rec("b", [0, 0, 1, 0], kind="b"))
            store.upsert(records)
            assert ids_of(store.search(Q, top_k=1, where={"kind": "b"})) == ["b"]

    # -- validation ----------------------------------------------------------------------------

    def test_a_record_of_the_wrong_dimension_is_refused_and_nothing_is_written(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            good = rec("good", [1, 0, 0, 0])
            with pytest.raises(ValidationError) as caught:
                store.upsert([good, rec("bad-one", [1, 0, 0])])
            message = str(caught.value)
            assert "bad-one" in message
            assert "4" in message
            assert "3" in message
            assert store.count() == 0
            assert store.get(["good"]) == []

    def test_a_query_of_the_wrong_dimension_is_refused(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            with pytest.raises(ValidationError) as caught:
                store.search([1, 0, 0, 0, 0])
            assert "expected 4" in str(caught.value)
            assert "got 5" in str(caught.value)

    @pytest.mark.parametrize(
        "value", [None, [1], {"a": 1}, b"x", float("nan"), float("inf"), 2**64], ids=repr
    )
    def test_metadata_values_are_strings_numbers_or_booleans(
        self, vector_store_factory: VectorStoreFactory, value: Any
    ) -> None:
        with self.opened(vector_store_factory) as store:
            with pytest.raises(ValidationError, match="bad_key"):
                store.upsert([rec("ok", [1, 0, 0, 0]), rec("r", [1, 0, 0, 0], bad_key=value)])
            assert store.count() == 0
            with pytest.raises(ValidationError, match="bad_key"):
                store.search(Q, where={"bad_key": value})

    @pytest.mark.parametrize("record_id", ["", None, 7, "nul\x00"], ids=repr)
    def test_ids_are_non_empty_strings(
        self, vector_store_factory: VectorStoreFactory, record_id: Any
    ) -> None:
        with self.opened(vector_store_factory) as store:
            with pytest.raises(ValidationError):
                store.upsert([Record(record_id, [1, 0, 0, 0])])
            assert store.count() == 0

    @pytest.mark.parametrize(
        "vector", [[0, 0, 0, 0], [1, float("nan"), 0, 0], [1, float("inf"), 0, 0]], ids=repr
    )
    def test_vectors_are_finite_and_not_zero(
        self, vector_store_factory: VectorStoreFactory, vector: list[float]
    ) -> None:
        with self.opened(vector_store_factory) as store:
            with pytest.raises(ValidationError, match="'r'"):
                store.upsert([Record("r", vector)])
            with pytest.raises(ValidationError):
                store.search(vector)
            assert store.count() == 0

    # -- persistence and concurrency -----------------------------------------------------------

    def _needs_persistence(self) -> None:
        if not self.persistent:
            pytest.skip(f"{type(self).__name__}: the store forgets its data when closed")

    def test_reopening_keeps_the_data(self, vector_store_factory: VectorStoreFactory) -> None:
        self._needs_persistence()
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
            store.delete(["orthogonal"])
            store.upsert([rec("same", [1, 0, 0, 0], "rewritten", kind="c")])
            before = store.search(Q, top_k=10)
        with self.opened(vector_store_factory) as store:
            assert store.count() == 3
            assert_same_matches(store.search(Q, top_k=10), before)
            assert store.get(["same"])[0].text == "rewritten"
            assert store.count({"kind": "c"}) == 1

    def test_reopening_with_another_dimension_is_refused(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        self._needs_persistence()
        with self.opened(vector_store_factory) as store:
            store.upsert(GEOMETRY)
        with pytest.raises(CompozyError) as caught:
            vector_store_factory(DIM + 1).close()
        assert "expected 5" in str(caught.value)
        assert "got 4" in str(caught.value)
        with self.opened(vector_store_factory) as store:
            assert store.count() == len(GEOMETRY)

    def test_concurrent_upserts_from_threads_lose_nothing(
        self, vector_store_factory: VectorStoreFactory
    ) -> None:
        threads, batches, size = 6, 4, 5
        errors: list[Exception] = []
        with self.opened(vector_store_factory) as store:
            start = threading.Barrier(threads)

            def work(worker: int) -> None:
                try:
                    start.wait()
                    for batch in range(batches):
                        store.upsert(
                            [
                                rec(f"w{worker}-{batch}-{n}", [1, worker, batch, n], w=worker)
                                for n in range(size)
                            ]
                        )
                except Exception as exc:  # noqa: BLE001  (reported below)
                    errors.append(exc)

            running = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
            for thread in running:
                thread.start()
            for thread in running:
                thread.join()
            assert errors == []
            assert store.count() == threads * batches * size
            for worker in range(threads):
                assert store.count({"w": worker}) == batches * size
            every = [
                f"w{w}-{b}-{n}" for w in range(threads) for b in range(batches) for n in range(size)
            ]
            assert len(store.get(every)) == len(every)

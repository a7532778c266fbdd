"""Contract of keyset paging: ``list_page`` of executions, users and API keys.

Pages are newest first on (created_at, id); a cursor is opaque, so these tests only ever pass
back cursors the store gave, except to check that anything else is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import pytest

from compozy.auth import APIKey, User
from compozy.core import Page, Status
from compozy.errors import ValidationError
from compozy.store import Store
from compozy.workflow import WorkflowFilter, WorkflowSummary
from compozy_testkit.contract._build import at, task, usage, workflow

T = TypeVar("T")

BAD_LIMITS: tuple[Any, ...] = (0, -1, 501, True, False, 2.0, "5", None)
BAD_CURSORS: tuple[Any, ...] = ("", "garbage", "!!!!", "eyJ4IjoxfQ", "W10", "W1tdLFtdXQ", 42)
"""Strings no store gives out (empty, not base64, or base64 of unrelated JSON) and a non-str."""


def _read_all(read: Callable[[str | None], Page[T]]) -> list[list[T]]:
    """Every page ``read(cursor)`` gives, from the first to the one without a next cursor."""
    pages = [read(None)]
    while (cursor := pages[-1].next_cursor) is not None:
        pages.append(read(cursor))
        assert len(pages) < 1000, "paging does not end"
    return [page.items for page in pages]


def _summary_pages(
    store: Store, limit: int, filter: WorkflowFilter | None = None
) -> list[list[WorkflowSummary]]:
    return _read_all(lambda cursor: store.workflows.list_page(filter, limit=limit, cursor=cursor))


def _exec_pages(store: Store, limit: int, filter: WorkflowFilter | None = None) -> list[list[str]]:
    return [[s.workflow_exec_id for s in page] for page in _summary_pages(store, limit, filter)]


def _flat(pages: list[list[T]]) -> list[T]:
    return [item for page in pages for item in page]


def _user(store: Store, user_id: str, seconds: float) -> User:
    # An email whose order has nothing to do with the id's, so only ordering by id passes.
    email = f"{hashlib.sha256(user_id.encode()).hexdigest()[:12]}@example.com"
    return store.auth.create_user(User(id=user_id, email=email, created_at=at(seconds)))


def _key(store: Store, user: User, key_id: str, seconds: float) -> APIKey:
    """A stored key (not a usable one: paging needs rows, not bcrypt)."""
    return store.auth.create_api_key(
        APIKey(
            id=key_id,
            user_id=user.id,
            prefix=hashlib.sha256(key_id.encode()).hexdigest()[:12],
            hash=b"not-a-bcrypt-hash",
            fingerprint=hashlib.sha256(key_id.encode()).digest(),
            created_at=at(seconds),
        )
    )


def _assert_every_list_refuses(store: Store, user: User, named: str, **page_args: Any) -> None:
    """The pages of executions, of users and of ``user``'s API keys each refuse ``page_args``
    with a ValidationError naming ``named``."""
    lists: list[Callable[..., object]] = [
        store.workflows.list_page,
        store.auth.list_users_page,
        partial(store.auth.list_api_keys_page, user.id),
    ]
    for list_page in lists:
        with pytest.raises(ValidationError, match=named):
            list_page(**page_args)


class PagingContract:
    """Keyset pages of executions, users and API keys, on whatever Store ``compozy_store`` gives."""

    # --- executions -----------------------------------------------------------------------

    def test_pages_give_every_execution_exactly_once_newest_first(
        self, compozy_store: Store
    ) -> None:
        # Three executions per timestamp, so ties on created_at straddle the page boundaries.
        for n in range(23):
            workflow(compozy_store, workflow_exec_id=f"e{n:02d}", created_at=at(n // 3))
        expected = [f"e{n:02d}" for n in reversed(range(23))]
        pages = _exec_pages(compozy_store, limit=5)
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert _flat(pages) == expected
        assert _flat(pages) == [s.workflow_exec_id for s in compozy_store.workflows.list_states()]

    def test_ties_on_created_at_are_broken_by_id_descending_byte_wise_across_pages(
        self, compozy_store: Store
    ) -> None:
        for exec_id, seconds in (("a", 1), ("B", 1), ("b", 1), ("old", 0), ("new", 2)):
            workflow(compozy_store, workflow_exec_id=exec_id, created_at=at(seconds))
        assert _exec_pages(compozy_store, limit=1) == [["new"], ["b"], ["a"], ["B"], ["old"]]
        assert _exec_pages(compozy_store, limit=2) == [["new", "b"], ["a", "B"], ["old"]]

    def test_the_last_page_has_no_cursor_even_when_it_is_full(self, compozy_store: Store) -> None:
        assert compozy_store.workflows.list_page() == Page([], None)
        for n in range(4):
            workflow(compozy_store, workflow_exec_id=f"e{n}", created_at=at(n))
        full = compozy_store.workflows.list_page(limit=4)
        assert ([s.workflow_exec_id for s in full.items], full.next_cursor) == (
            ["e3", "e2", "e1", "e0"],
            None,
        )
        first = compozy_store.workflows.list_page(limit=3)
        assert first.next_cursor is not None
        last = compozy_store.workflows.list_page(limit=3, cursor=first.next_cursor)
        assert ([s.workflow_exec_id for s in last.items], last.next_cursor) == (["e0"], None)

    def test_a_cursor_can_be_read_again_and_gives_the_same_page(self, compozy_store: Store) -> None:
        for n in range(5):
            workflow(compozy_store, workflow_exec_id=f"e{n}", created_at=at(n))
        first = compozy_store.workflows.list_page(limit=2)
        assert first.next_cursor is not None
        again = compozy_store.workflows.list_page(limit=2, cursor=first.next_cursor)
        assert again == compozy_store.workflows.list_page(limit=2, cursor=first.next_cursor)
        assert [s.workflow_exec_id for s in again.items] == ["e2", "e1"]

    def test_the_default_page_holds_fifty_and_five_hundred_is_the_largest_limit(
        self, compozy_store: Store
    ) -> None:
        for n in range(51):
            workflow(compozy_store, workflow_exec_id=f"e{n:02d}", created_at=at(n))
        default = compozy_store.workflows.list_page()
        assert len(default.items) == 50
        assert default.next_cursor is not None
        largest = compozy_store.workflows.list_page(limit=500)
        assert (len(largest.items), largest.next_cursor) == (51, None)

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_a_limit_outside_one_to_five_hundred_is_refused_on_every_list(
        self, compozy_store: Store, limit: Any
    ) -> None:
        user = _user(compozy_store, "u", 0)
        _assert_every_list_refuses(compozy_store, user, "limit", limit=limit)

    @pytest.mark.parametrize("cursor", BAD_CURSORS)
    def test_a_cursor_the_store_did_not_give_is_refused_on_every_list(
        self, compozy_store: Store, cursor: Any
    ) -> None:
        user = _user(compozy_store, "u", 0)
        workflow(compozy_store, workflow_exec_id="e", created_at=at(0))
        _assert_every_list_refuses(compozy_store, user, "cursor", cursor=cursor)

    def test_filters_by_status_and_workflow_id_page_only_matching_executions(
        self, compozy_store: Store
    ) -> None:
        statuses = (Status.RUNNING, Status.SUCCESS, Status.PENDING)
        for n in range(18):
            workflow(
                compozy_store,
                workflow_exec_id=f"e{n:02d}",
                workflow_id="x" if n % 2 else "y",
                status=statuses[n % 3],
                created_at=at(n // 4),
            )
        for fields in (
            {"status": Status.RUNNING},
            {"workflow_id": "x"},
            {"workflow_id": "x", "status": Status.SUCCESS},
            {"workflow_id": "nobody"},
        ):
            wanted = WorkflowFilter(**fields)
            expected = [s.workflow_exec_id for s in compozy_store.workflows.list_states(wanted)]
            summaries = _flat(_summary_pages(compozy_store, 2, wanted))
            assert [s.workflow_exec_id for s in summaries] == expected, fields
            for summary in summaries:
                assert fields.get("status", summary.status) is summary.status
                assert fields.get("workflow_id", summary.workflow_id) == summary.workflow_id
        assert len(_flat(_exec_pages(compozy_store, 2, WorkflowFilter(status=Status.RUNNING)))) == 6

    def test_task_status_counts_count_the_latest_state_of_each_task_id(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store, workflow_exec_id="counted", created_at=at(1))
        empty = workflow(compozy_store, workflow_exec_id="empty", created_at=at(0))
        other = workflow(compozy_store, workflow_exec_id="other", created_at=at(2))
        states = [
            ("a", "a-1", Status.RUNNING, 1),
            ("a", "a-2", Status.SUCCESS, 2),  # later: a counts as SUCCESS
            ("b", "b-1", Status.FAILED, 1),
            ("b", "b-2", Status.RUNNING, 3),  # later: b counts as RUNNING
            ("c", "c-B", Status.SUCCESS, 5),
            ("c", "c-a", Status.PENDING, 5),  # same instant, larger id: c counts as PENDING
            ("d", "d-1", Status.SUCCESS, 4),
        ]
        for task_id, task_exec_id, status, seconds in states:
            task(
                compozy_store,
                wf,
                task_id=task_id,
                task_exec_id=task_exec_id,
                status=status,
                created_at=at(seconds),
            )
        task(compozy_store, other, task_id="a", status=Status.FAILED)
        summaries = {s.workflow_exec_id: s for s in compozy_store.workflows.list_page().items}
        counted = summaries["counted"]
        assert counted.task_status_counts == {
            Status.SUCCESS: 2,
            Status.RUNNING: 1,
            Status.PENDING: 1,
        }
        assert counted.task_count == 4
        latest = compozy_store.workflows.get_state("counted").tasks.values()
        assert counted.task_status_counts == dict(Counter(t.status for t in latest))
        assert summaries["other"].task_status_counts == {Status.FAILED: 1}
        nothing = summaries[empty.workflow_exec_id]
        assert (nothing.task_status_counts, nothing.task_count) == ({}, 0)

    def test_task_status_counts_of_each_execution_are_its_own(self, compozy_store: Store) -> None:
        first = workflow(compozy_store, workflow_exec_id="first", created_at=at(1))
        second = workflow(compozy_store, workflow_exec_id="second", created_at=at(2))
        for wf, statuses in (
            (first, {"a": Status.SUCCESS, "b": Status.RUNNING}),
            (second, {"a": Status.SUCCESS, "b": Status.SUCCESS, "c": Status.FAILED}),
        ):
            for n, (task_id, status) in enumerate(statuses.items()):
                task(
                    compozy_store,
                    wf,
                    task_id=task_id,
                    task_exec_id=f"{wf.workflow_exec_id}-{task_id}",
                    status=status,
                    created_at=at(n),
                )
        # An older state of "a" in the second execution that must not count anywhere.
        task(
            compozy_store,
            second,
            task_id="a",
            task_exec_id="second-a-old",
            status=Status.RUNNING,
            created_at=at(-1),
        )
        for limit in (1, 2):
            summaries = {s.workflow_exec_id: s for s in _flat(_summary_pages(compozy_store, limit))}
            assert summaries["first"].task_status_counts == {
                Status.SUCCESS: 1,
                Status.RUNNING: 1,
            }
            assert summaries["second"].task_status_counts == {
                Status.SUCCESS: 2,
                Status.FAILED: 1,
            }
            assert (summaries["first"].task_count, summaries["second"].task_count) == (2, 3)

    @pytest.mark.parametrize(
        ("when", "key"),
        [
            (at(5).isoformat(), ""),
            (at(5).isoformat(), 5),
            (at(5).isoformat(), None),
            (at(5).isoformat(), ["e"]),
            (at(5).replace(tzinfo=None).isoformat(), "e"),  # a time without its zone
        ],
    )
    def test_a_cursor_with_an_empty_or_non_string_key_or_a_naive_time_is_refused(
        self, compozy_store: Store, when: str, key: Any
    ) -> None:
        workflow(compozy_store, workflow_exec_id="e", created_at=at(0))
        user = _user(compozy_store, "u", 0)
        raw = json.dumps([when, key], separators=(",", ":")).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        _assert_every_list_refuses(compozy_store, user, "cursor", cursor=cursor)

    @pytest.mark.parametrize("suffix", ["X", "A", "AA", "AAAA", "Zm9v", "IA", "!", "=", " ", "~~"])
    def test_a_cursor_with_characters_added_is_refused_or_reads_the_same_page(
        self, compozy_store: Store, suffix: str
    ) -> None:
        # A cursor is opaque: an altered one is refused, or (if the alteration changes nothing
        # it stands for) reads exactly the page of the cursor; never another page.
        for n in range(6):
            workflow(compozy_store, workflow_exec_id=f"e{n}", created_at=at(n))
        first = compozy_store.workflows.list_page(limit=2)
        assert first.next_cursor is not None
        second = compozy_store.workflows.list_page(limit=2, cursor=first.next_cursor)
        assert [s.workflow_exec_id for s in second.items] == ["e3", "e2"]
        altered: Page[WorkflowSummary] | None = None
        refusal = ""
        try:
            altered = compozy_store.workflows.list_page(limit=2, cursor=first.next_cursor + suffix)
        except ValidationError as refused:
            refusal = str(refused)
        if altered is None:
            assert "cursor" in refusal
        else:
            assert [s.workflow_exec_id for s in altered.items] == ["e3", "e2"]
            assert altered.next_cursor == second.next_cursor

    def test_a_summary_carries_the_execution_fields_and_who_runs_it(
        self, compozy_store: Store
    ) -> None:
        stored = workflow(
            compozy_store,
            workflow_exec_id="x",
            workflow_id="flow",
            status=Status.PENDING,
            usage=usage(),
            input={"in": 1},
            output={"out": [1, 2]},
            error={"message": "earlier"},
            created_at=at(3),
        )
        (summary,) = compozy_store.workflows.list_page().items
        assert isinstance(summary, WorkflowSummary)
        fields = ("workflow_exec_id", "workflow_id", "status", "usage", "input", "output", "error")
        assert {f: getattr(summary, f) for f in fields} == {f: getattr(stored, f) for f in fields}
        assert (summary.created_at, summary.updated_at) == (stored.created_at, stored.updated_at)
        assert (summary.worker_id, summary.lease_expires_at, summary.claim_count) == (None, None, 0)
        assert summary.cancel_requested_at is None
        (claim,) = compozy_store.queue.claim("w1", limit=1, lease=30)
        compozy_store.queue.request_cancel("x")
        (claimed,) = compozy_store.workflows.list_page().items
        assert (claimed.status, claimed.worker_id, claimed.claim_count) == (
            Status.RUNNING,
            "w1",
            1,
        )
        assert claimed.lease_expires_at == claim.lease_expires_at
        assert claimed.cancel_requested_at is not None

    def test_paging_while_rows_are_inserted_gives_every_earlier_row_exactly_once(
        self, compozy_store: Store
    ) -> None:
        earlier = [
            workflow(compozy_store, workflow_exec_id=f"e{n:02d}", created_at=at(n // 2))
            for n in range(20)
        ]
        newer: list[str] = []
        rounds = iter(range(100))

        def read_then_write(cursor: str | None) -> Page[WorkflowSummary]:
            page = compozy_store.workflows.list_page(limit=3, cursor=cursor)
            if page.next_cursor is None:
                return page
            round_ = next(rounds)
            # Newer rows: a later created_at, and the same created_at as the page's last row
            # with a larger id ('f' > 'e'), which sorts before it. Neither may show up.
            for exec_id, created in (
                (f"n{round_:02d}", at(1000 + round_)),
                (f"f{round_:02d}", page.items[-1].created_at),
            ):
                workflow(compozy_store, workflow_exec_id=exec_id, created_at=created)
                newer.append(exec_id)
            # Updating rows (read or not yet read) moves nothing: paging is by created_at.
            for updated in (earlier[round_], earlier[-1 - round_]):
                compozy_store.workflows.update_status(updated.workflow_exec_id, Status.SUCCESS)
            return page

        seen = [s.workflow_exec_id for s in _flat(_read_all(read_then_write))]
        assert Counter(seen) == Counter(s.workflow_exec_id for s in earlier)
        assert seen == [s.workflow_exec_id for s in reversed(earlier)]
        assert set(newer).isdisjoint(seen)
        assert len(compozy_store.workflows.list_states()) == len(earlier) + len(newer)

    # --- users and API keys ---------------------------------------------------------------

    def test_user_pages_give_every_user_exactly_once_newest_first(
        self, compozy_store: Store
    ) -> None:
        for n in range(11):
            _user(compozy_store, f"u{n:02d}", n // 2)
        _user(compozy_store, "U99", 0)  # byte order: 'U' < 'u', so it is the oldest of at(0)
        pages = _read_all(lambda cursor: compozy_store.auth.list_users_page(limit=4, cursor=cursor))
        assert [len(p) for p in pages] == [4, 4, 4]
        ids = [u.id for u in _flat(pages)]
        assert ids == [f"u{n:02d}" for n in reversed(range(11))] + ["U99"]
        assert _flat(pages) == compozy_store.auth.list_users()

    def test_user_paging_while_users_are_added_gives_every_earlier_user_exactly_once(
        self, compozy_store: Store
    ) -> None:
        earlier = [_user(compozy_store, f"u{n:02d}", n) for n in range(7)]
        rounds = iter(range(100))

        def read_then_add(cursor: str | None) -> Page[User]:
            page = compozy_store.auth.list_users_page(limit=2, cursor=cursor)
            if page.next_cursor is not None:
                round_ = next(rounds)
                _user(compozy_store, f"v{round_:02d}", 1000 + round_)
            return page

        seen = [u.id for u in _flat(_read_all(read_then_add))]
        assert seen == [u.id for u in reversed(earlier)]

    def test_api_key_pages_give_each_key_of_that_user_exactly_once_newest_first(
        self, compozy_store: Store
    ) -> None:
        owner, other = _user(compozy_store, "owner", 0), _user(compozy_store, "other", 0)
        for n in range(8):
            _key(compozy_store, owner, f"k{n}", n // 3)
        _key(compozy_store, other, "foreign", 5)
        pages = _read_all(
            lambda cursor: compozy_store.auth.list_api_keys_page(owner.id, limit=3, cursor=cursor)
        )
        assert [len(p) for p in pages] == [3, 3, 2]
        assert [k.id for k in _flat(pages)] == [f"k{n}" for n in reversed(range(8))]
        assert _flat(pages) == compozy_store.auth.list_api_keys_by_user_id(owner.id)
        only = compozy_store.auth.list_api_keys_page(other.id)
        assert ([k.id for k in only.items], only.next_cursor) == (["foreign"], None)

"""Contract of identifiers, enums, usage merging and stored values."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from compozy.core import (
    FAILED_STATUSES,
    MAX_JSON_DEPTH,
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Component,
    ExecutionType,
    Role,
    Status,
    ids,
    new_id,
    parse_id,
)
from compozy.core.values import MAX_LEASE
from compozy.errors import ValidationError
from compozy.store import Store, sql_connection
from compozy.task import ProgressInfo
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowFilter, WorkflowState
from compozy_testkit.contract._build import task, workflow
from compozy_testkit.databases import TestDatabase

YEAR_1_EAST = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
"""An aware datetime that is in year 0 in UTC: no database can store it."""


def nested(levels: int) -> dict[str, Any]:
    """A JSON object whose objects and arrays nest ``levels`` deep (``{}`` is one level)."""
    value: Any = {}
    for level in range(levels - 1):
        # Objects and arrays alternate, ending with an object outermost.
        value = {"a": value} if (levels - level) % 2 == 0 else [value]
    assert isinstance(value, dict)
    return value


def depth_of(value: Any) -> int:
    """How deep objects and arrays nest in ``value``, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


UNSTORABLE_JSON: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    "nul\x00byte",
    {"key\x00": 1},
    "lone \ud800 surrogate",
    {"\udfff": 1},
    {1: "int key"},
    (1, 2),
    {1, 2},
    b"bytes",
    datetime(2026, 1, 1, tzinfo=UTC),
    object(),
]


class _SetClock:
    """Stands in for the ``time`` module where ``compozy.core.ids`` reads the time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def _ksuid_second(value: str) -> int:
    """The Unix second a KSUID carries (its top 32 bits count from the KSUID epoch)."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    number = 0
    for char in value:
        number = number * 62 + alphabet.index(char)
    return (number >> 128) + 1_400_000_000


class ValueContract:
    """Values behave the same on every backend, and the pure rules hold."""

    # --- ids and enums --------------------------------------------------------------------

    def test_new_id_is_a_27_character_base62_ksuid(self) -> None:
        value = new_id()
        assert len(value) == 27
        assert value.isalnum()
        assert value.isascii()
        assert parse_id(value) == value

    def test_new_ids_sort_by_creation_second(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The clock new_id reads is set, not waited for: ids of the last thousandth of one
        # second, then of the first thousandth of the next. Their random parts differ, so only
        # the second can put every later id after every earlier one.
        clock = _SetClock(1_767_225_600.999)  # 2026-01-01T00:00:00.999Z
        monkeypatch.setattr(ids, "time", clock)
        earlier = [new_id() for _ in range(50)]
        clock.now += 0.002
        later = [new_id() for _ in range(50)]
        assert len(set(earlier)) == len(earlier)
        assert min(later) > max(earlier)
        clock.now += 86_400 * 365
        assert new_id() > max(later)

    def test_new_id_carries_the_current_second(self) -> None:
        # What the test above sets is the clock new_id really reads.
        before = int(time.time())
        stamp = _ksuid_second(new_id())
        assert before <= stamp <= int(time.time())

    @pytest.mark.parametrize("bad", ["", "short", "x" * 28, "!" * 27, "z" * 27])
    def test_parse_id_refuses_empty_or_non_ksuid_text(self, bad: str) -> None:
        with pytest.raises(ValidationError):
            parse_id(bad)

    def test_status_sets_are_as_specified(self) -> None:
        assert {s.value for s in Status} == {
            "PENDING",
            "RUNNING",
            "SUCCESS",
            "FAILED",
            "TIMED_OUT",
            "CANCELED",
            "WAITING",
            "PAUSED",
        }
        assert {s.value for s in RUNNING_STATUSES} == {"PENDING", "RUNNING", "WAITING", "PAUSED"}
        assert {s.value for s in FAILED_STATUSES} == {"FAILED", "TIMED_OUT", "CANCELED"}
        assert FAILED_STATUSES | {Status.SUCCESS} == TERMINAL_STATUSES

    def test_an_unknown_enum_value_is_a_validation_error_naming_the_field(self) -> None:
        with pytest.raises(ValidationError, match="status"):
            WorkflowState(workflow_id="w", status="DONE")  # type: ignore[arg-type]

    def test_enum_values_are_read_in_any_letter_case(self, compozy_store: Store) -> None:
        assert (Status("running"), Status("Timed_Out")) == (Status.RUNNING, Status.TIMED_OUT)
        assert (Role("ADMIN"), Component("Task"), ExecutionType("PARALLEL")) == (
            Role.ADMIN,
            Component.TASK,
            ExecutionType.PARALLEL,
        )
        # Only ASCII letters fold: U+017F (a long s) is not an "s".
        with pytest.raises(ValueError, match="\u017fuccess"):
            Status("\u017fuccess")
        stored = workflow(compozy_store, status="success")  # type: ignore[arg-type]
        assert stored.status is Status.SUCCESS
        found = compozy_store.workflows.list_states(WorkflowFilter(status="Success"))  # type: ignore[arg-type]
        assert [s.workflow_exec_id for s in found] == [stored.workflow_exec_id]

    # --- timestamps -----------------------------------------------------------------------

    def test_timestamps_round_trip_exactly_as_aware_utc_with_microseconds(
        self, compozy_store: Store
    ) -> None:
        created = datetime(2031, 7, 4, 23, 59, 59, 999999, tzinfo=UTC)
        stored = workflow(compozy_store, created_at=created)
        loaded = compozy_store.workflows.get_state(stored.workflow_exec_id)
        assert loaded.created_at == created
        assert loaded.created_at is not None
        assert loaded.created_at.utcoffset() == timedelta(0)
        assert loaded.created_at.microsecond == 999999

    def test_timestamps_in_other_zones_are_stored_as_the_same_instant_in_utc(
        self, compozy_store: Store
    ) -> None:
        tokyo = datetime(2030, 1, 1, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=9)))
        stored = workflow(compozy_store, created_at=tokyo)
        assert stored.created_at == tokyo
        assert stored.created_at is not None
        assert stored.created_at.tzinfo == UTC
        assert stored.created_at.hour == 0

    def test_an_aware_time_outside_years_1_to_9999_in_utc_is_refused(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(ValidationError, match=r"created_at is 0001-01-01T00:00:00\+05:00"):
            workflow(compozy_store, created_at=YEAR_1_EAST)
        wf = workflow(compozy_store)
        with pytest.raises(ValidationError, match=r"updated_at .* outside years 1-9999"):
            task(compozy_store, wf, updated_at=YEAR_1_EAST)
        assert compozy_store.tasks.list_states() == []
        # A cursor naming such an instant is not one the store gave out: refused, not a crash.
        raw = json.dumps([YEAR_1_EAST.isoformat(), wf.workflow_exec_id]).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with pytest.raises(ValidationError, match="cursor"):
            compozy_store.workflows.list_page(cursor=cursor)

    def test_naive_datetimes_are_refused(self, compozy_store: Store) -> None:
        with pytest.raises(ValidationError, match="naive"):
            workflow(compozy_store, created_at=datetime(2030, 1, 1))
        assert compozy_store.workflows.list_states() == []

    def test_text_order_of_stored_timestamps_is_time_order(self, compozy_store: Store) -> None:
        # Years and fractions of different widths would break a naive text encoding.
        moments = [
            datetime(999, 1, 1, tzinfo=UTC),
            datetime(2030, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
            datetime(2030, 1, 1, 0, 0, 0, 40, tzinfo=UTC),
            datetime(9999, 1, 1, tzinfo=UTC),
        ]
        for i, moment in enumerate(reversed(moments)):
            workflow(compozy_store, workflow_exec_id=f"w{i}", created_at=moment)
        listed = [s.created_at for s in compozy_store.workflows.list_states()]
        assert listed == sorted(moments, reverse=True)

    # --- JSON -----------------------------------------------------------------------------

    def test_json_values_round_trip_as_equal_python_values(self, compozy_store: Store) -> None:
        document = {
            "text": "héllo ✓ 😀 \u2028 'quotes' \"double\"",
            "int": 2**62,
            "negative": -7,
            "float": 0.1,
            "big_float": 1.5e300,
            "bool": [True, False],
            "none": None,
            "nested": {"list": [1, [2, {"deep": []}]], "empty": {}},
            "": "empty key",
        }
        stored = workflow(compozy_store, input=document, output={}, error={"e": None})
        loaded = compozy_store.workflows.get_state(stored.workflow_exec_id)
        assert (loaded.input, loaded.output, loaded.error) == (document, {}, {"e": None})

    def test_none_is_sql_null_not_json_null(self, compozy_store: Store) -> None:
        stored = workflow(compozy_store, input=None, output=None)
        loaded = compozy_store.workflows.get_state(stored.workflow_exec_id)
        assert (loaded.input, loaded.output, loaded.usage) == (None, None, None)

    @pytest.mark.parametrize("bad", UNSTORABLE_JSON, ids=lambda v: type(v).__name__ + repr(v)[:12])
    def test_unstorable_json_is_refused_before_any_sql(
        self, compozy_store: Store, bad: Any
    ) -> None:
        with pytest.raises(ValidationError, match="input"):
            workflow(compozy_store, input={"value": bad})
        wf = workflow(compozy_store)
        with pytest.raises(ValidationError, match="output"):
            task(compozy_store, wf, output={"nested": [bad]})
        assert compozy_store.tasks.list_states() == []

    @pytest.mark.parametrize("field", ["input", "output", "error"])
    def test_json_nests_at_most_max_json_depth_levels_in_every_field(
        self, compozy_store: Store, field: str
    ) -> None:
        deepest: dict[str, Any] = {field: nested(MAX_JSON_DEPTH)}
        assert depth_of(deepest[field]) == MAX_JSON_DEPTH
        stored = workflow(compozy_store, **deepest)
        loaded = compozy_store.workflows.get_state(stored.workflow_exec_id)
        assert getattr(loaded, field) == deepest[field]
        # One level more, and far more (where drivers' encoders would recurse past Python's
        # limit): the same ValidationError naming the field, on every backend, before any SQL.
        refused = f"^{field} is nested too deeply: .* deeper than {MAX_JSON_DEPTH} levels"
        for levels in (MAX_JSON_DEPTH + 1, 400, 5000):
            too_deep: dict[str, Any] = {field: nested(levels)}
            with pytest.raises(ValidationError, match=refused):
                workflow(compozy_store, **too_deep)
            with pytest.raises(ValidationError, match=refused):
                task(compozy_store, loaded, **too_deep)
        assert [s.workflow_exec_id for s in compozy_store.workflows.list_states()] == [
            stored.workflow_exec_id
        ]
        assert compozy_store.tasks.list_states() == []

    def test_a_lease_must_be_finite_and_at_most_a_day(self, compozy_store: Store) -> None:
        workflow(compozy_store, status=Status.PENDING)
        for lease in (float("inf"), float("nan"), MAX_LEASE + 1, 1e300, 0):
            with pytest.raises(ValidationError, match="lease is"):
                compozy_store.queue.claim("w1", limit=1, lease=lease)
        assert [c.worker_id for c in compozy_store.queue.claim("w1", limit=1, lease=MAX_LEASE)] == [
            "w1"
        ]

    @pytest.mark.parametrize("bad", ["bad\x00id", "bad\ud800id"])
    def test_text_fields_that_cannot_be_stored_are_refused(
        self, compozy_store: Store, bad: str
    ) -> None:
        with pytest.raises(ValidationError, match="workflow_id"):
            workflow(compozy_store, workflow_id=bad)
        with pytest.raises(ValidationError, match="task_exec_id"):
            compozy_store.tasks.get_state(bad)

    # --- usage ----------------------------------------------------------------------------

    def test_usage_entry_is_normalised_when_built(self) -> None:
        entry = UsageEntry(
            provider=" openai ",
            model=" gpt ",
            prompt_tokens=3,
            completion_tokens=4,
            agent_ids=[" b", "a", "b ", ""],
            source="Task",
        )
        assert (entry.provider, entry.model, entry.total_tokens) == ("openai", "gpt", 7)
        assert entry.agent_ids == ["a", "b"]
        assert entry.source == "task"
        explicit = UsageEntry(provider="p", model="m", prompt_tokens=1, total_tokens=10)
        assert explicit.total_tokens == 10

    @pytest.mark.parametrize(
        "fields",
        [
            {"provider": " "},
            {"model": ""},
            {"prompt_tokens": -1},
            {"reasoning_tokens": -2},
            {"completion_tokens": 1.5},
            {"source": "agent"},
            {"captured_at": datetime(2030, 1, 1)},
        ],
    )
    def test_usage_entry_refuses_bad_values(self, fields: dict[str, Any]) -> None:
        values: dict[str, Any] = {"provider": "p", "model": "m", **fields}
        with pytest.raises(ValidationError):
            UsageEntry(**values)

    def test_usage_merge_sums_equal_keys_case_insensitively_and_sorts(self) -> None:
        t1 = datetime(2030, 1, 1, tzinfo=UTC)
        t2 = t1 + timedelta(hours=1)
        a = UsageSummary(
            entries=[
                UsageEntry(
                    provider="openai",
                    model="gpt",
                    prompt_tokens=1,
                    completion_tokens=2,
                    reasoning_tokens=None,
                    cached_prompt_tokens=5,
                    agent_ids=["x"],
                    captured_at=t2,
                    updated_at=t1,
                    source="task",
                ),
                UsageEntry(provider="zeta", model="m", prompt_tokens=1),
            ]
        )
        b = UsageSummary(
            entries=[
                UsageEntry(
                    provider="OpenAI",
                    model="GPT",
                    prompt_tokens=10,
                    completion_tokens=20,
                    reasoning_tokens=None,
                    cached_prompt_tokens=None,
                    agent_ids=["y", "x"],
                    captured_at=t1,
                    updated_at=t2,
                    source="TASK",
                ),
                UsageEntry(provider="anthropic", model="claude", prompt_tokens=2),
            ]
        )
        merged = a.merge(b)
        assert [(e.provider, e.model) for e in merged.entries] == [
            ("anthropic", "claude"),
            ("openai", "gpt"),
            ("zeta", "m"),
        ]
        summed = merged.entries[1]
        assert (summed.prompt_tokens, summed.completion_tokens, summed.total_tokens) == (11, 22, 33)
        assert summed.reasoning_tokens is None
        assert summed.cached_prompt_tokens == 5
        assert summed.agent_ids == ["x", "y"]
        assert (summed.captured_at, summed.updated_at) == (t1, t2)

    def test_usage_round_trips_through_its_json_form(self, compozy_store: Store) -> None:
        summary = UsageSummary(entries=[UsageEntry(provider="p", model="m", prompt_tokens=1)])
        assert isinstance(summary.to_json(), list)
        stored = workflow(compozy_store, usage=summary)
        assert compozy_store.workflows.get_state(stored.workflow_exec_id).usage == summary
        assert UsageSummary.from_json(summary.to_json()) == summary

    def test_usage_is_stored_as_a_bare_json_array(self, compozy_database: TestDatabase) -> None:
        store = compozy_database.store()
        summary = UsageSummary(entries=[UsageEntry(provider="p", model="m", prompt_tokens=1)])
        stored = workflow(store, usage=summary)
        assert stored.workflow_exec_id.isalnum()  # safe to inline in the statement below
        with sql_connection(store) as conn:
            (raw,) = conn.exec_driver_sql(
                "SELECT usage FROM workflow_states "
                f"WHERE workflow_exec_id = '{stored.workflow_exec_id}'"
            ).one()
        # SQLite hands back the stored text, PostgreSQL's driver the parsed jsonb.
        column = json.loads(raw) if isinstance(raw, str) else raw
        assert column == summary.to_json()
        assert isinstance(column, list)
        assert column[0]["provider"] == "p"

    def test_progress_rates_are_zero_without_children_and_fractions_otherwise(self) -> None:
        assert ProgressInfo.from_counts({}).completion_rate == 0.0
        info = ProgressInfo.from_counts(
            {Status.SUCCESS: 1, Status.FAILED: 1, Status.TIMED_OUT: 1, Status.CANCELED: 1}
        )
        assert info.completion_rate == pytest.approx(0.25)
        assert info.failure_rate == pytest.approx(0.5)

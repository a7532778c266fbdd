"""The one timestamp text (compozy.core.values): its width, its zone, and every place using it."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from compozy.api.models import UsageEntryOut, UserOut
from compozy.api.serialize import task_out, user_out
from compozy.auth import User
from compozy.core import Component, ExecutionType, Status
from compozy.core.values import format_timestamp, parse_timestamp, read_timestamp
from compozy.errors import ValidationError
from compozy.store import Store, sql_connection
from compozy.task import TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowState

INDIA = timezone(timedelta(hours=5, minutes=30))
WEST = timezone(-timedelta(hours=5, minutes=30))
CEST = timezone(timedelta(hours=2))

CASES = [
    (datetime(5, 1, 1, tzinfo=UTC), "0005-01-01T00:00:00.000000Z"),
    (datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "0999-12-31T23:59:59.999999Z"),
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999999Z"),
    (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000000Z"),
    (datetime(2026, 3, 4, 5, 6, 7, 0, tzinfo=UTC), "2026-03-04T05:06:07.000000Z"),
    (datetime(2026, 3, 4, 5, 6, 7, 999999, tzinfo=UTC), "2026-03-04T05:06:07.999999Z"),
    (datetime(2026, 3, 4, 5, 6, 7, 1, tzinfo=UTC), "2026-03-04T05:06:07.000001Z"),
    # UTC+05:30: the same instant, written in UTC (the day before, here).
    (datetime(2026, 1, 1, 3, 0, 0, 250, tzinfo=INDIA), "2025-12-31T21:30:00.000250Z"),
]


@pytest.mark.parametrize(("moment", "text"), CASES)
def test_format_is_fixed_width_utc_with_four_digit_years_and_six_digit_microseconds(
    moment: datetime, text: str
) -> None:
    assert format_timestamp(moment) == text
    assert len(format_timestamp(moment)) == len("2000-01-01T00:00:00.000000Z")


@pytest.mark.parametrize(("moment", "text"), CASES)
def test_parse_is_the_inverse_of_format(moment: datetime, text: str) -> None:
    parsed = parse_timestamp(format_timestamp(moment))
    assert parsed == moment
    assert parsed.tzinfo == UTC
    assert parse_timestamp(text) == moment
    assert format_timestamp(parse_timestamp(text)) == text


def test_a_non_utc_instant_is_formatted_as_the_same_instant_in_utc() -> None:
    moment = datetime(2030, 6, 1, 0, 15, 0, 42, tzinfo=INDIA)
    text = format_timestamp(moment)
    assert text == "2030-05-31T18:45:00.000042Z"
    assert parse_timestamp(text) == moment


def test_a_naive_datetime_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^created_at is a naive datetime"):
        format_timestamp(datetime(2030, 1, 1), "created_at")
    with pytest.raises(ValidationError, match=r"^timestamp must be a datetime"):
        format_timestamp("2030-01-01T00:00:00.000000Z")  # type: ignore[arg-type]


def test_an_instant_outside_years_1_to_9999_in_utc_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^captured_at .*outside years 1-9999"):
        format_timestamp(datetime(1, 1, 1, 3, 0, tzinfo=INDIA), "captured_at")
    with pytest.raises(ValidationError, match=r"^captured_at .*outside years 1-9999"):
        format_timestamp(datetime(9999, 12, 31, 23, 0, tzinfo=WEST), "captured_at")


def test_text_order_is_time_order_across_years_1_to_9999() -> None:
    rng = random.Random(8)
    span = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - datetime(1, 1, 1, tzinfo=UTC)
    start = datetime(1, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(microseconds=rng.randrange(span // timedelta(microseconds=1)))]
    moments += [start + timedelta(microseconds=rng.randrange(10**i)) for i in range(1, 18)]
    moments += [moment for moment, _ in CASES]
    moments += [datetime(year, 1, 1, tzinfo=UTC) for year in (9, 10, 99, 100, 999, 1000)]
    moments += [start + timedelta(days=rng.randrange(span.days)) for _ in range(300)]
    moments.sort()
    texts = [format_timestamp(m) for m in moments]
    assert sorted(texts) == texts
    assert {len(t) for t in texts} == {27}
    assert [parse_timestamp(t) for t in texts] == moments


@pytest.mark.parametrize(
    "text",
    [
        "5-01-01T00:00:00.000000Z",  # unpadded year
        "2026-11-26T01:02:03Z",  # no microseconds
        "2026-11-26T01:02:03.000004+00:00",  # offset instead of Z
        "2026-11-26 01:02:03.000004Z",  # space instead of T, same width
        "2026-11-26T01:02:03.000004",  # naive
        "0000-01-01T00:00:00.000000Z",  # year 0
        "2026-02-30T00:00:00.000000Z",  # no such day
        "\uff12026-11-26T01:02:03.000004Z",  # a non-ASCII digit (fullwidth 2)
    ],
)
def test_parse_refuses_anything_but_the_fixed_width_form(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_read_timestamp_takes_iso_8601_with_an_offset_and_gives_utc() -> None:
    assert read_timestamp("0005-01-01T00:00:00.000000Z", "f") == datetime(5, 1, 1, tzinfo=UTC)
    read = read_timestamp("2030-01-01T02:00:00+02:00", "f")
    assert read == datetime(2030, 1, 1, tzinfo=UTC)
    assert read.tzinfo == UTC
    with pytest.raises(ValidationError, match=r"^usage captured_at .* no UTC offset"):
        read_timestamp("2030-01-01T02:00:00", "usage captured_at")
    with pytest.raises(ValidationError, match=r"^f 'yesterday' is not an ISO 8601"):
        read_timestamp("yesterday", "f")
    with pytest.raises(ValidationError, match=r"^f must be an ISO 8601 timestamp string"):
        read_timestamp(5, "f")


# --- the API --------------------------------------------------------------------------------


def test_the_api_shows_year_5_with_four_digits_in_utc() -> None:
    user = User(id="u1", email="a@b.c", created_at=datetime(5, 1, 1, 5, 30, tzinfo=INDIA))
    user.validate()
    out = user_out(user)
    assert out.model_dump(mode="json")["created_at"] == "0005-01-01T00:00:00.000000Z"
    assert json.loads(out.model_dump_json())["created_at"] == "0005-01-01T00:00:00.000000Z"
    # Even a model built with a non-UTC value is sent in UTC.
    direct = UserOut(
        id="u1", email="a@b.c", role=user.role, created_at=datetime(5, 1, 1, 5, 30, tzinfo=INDIA)
    )
    assert direct.model_dump(mode="json")["created_at"] == "0005-01-01T00:00:00.000000Z"


def test_the_api_shows_task_and_usage_timestamps_with_the_same_text() -> None:
    year_5 = datetime(5, 1, 1, tzinfo=UTC)
    usage = UsageSummary(
        entries=[UsageEntry(provider="p", model="m", captured_at=year_5, updated_at=year_5)]
    )
    task = TaskState(
        task_id="t",
        workflow_id="w",
        workflow_exec_id="we",
        component=Component.TASK,
        execution_type=ExecutionType.BASIC,
        status=Status.SUCCESS,
        usage=usage,
        created_at=datetime(999, 1, 1, tzinfo=UTC),
        updated_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    sent = task_out(task).model_dump(mode="json")
    assert sent["created_at"] == "0999-01-01T00:00:00.000000Z"
    assert sent["updated_at"] == "9999-12-31T23:59:59.999999Z"
    (entry,) = sent["usage"]
    assert entry["captured_at"] == entry["updated_at"] == "0005-01-01T00:00:00.000000Z"
    assert entry["captured_at"] == usage.to_json()[0]["captured_at"]
    assert UsageEntryOut.model_json_schema()["properties"]["captured_at"]["anyOf"][0] == {
        "type": "string",
        "format": "date-time",
    }


# --- usage JSON -----------------------------------------------------------------------------


def test_usage_json_shows_a_utc_plus_2_captured_at_in_utc() -> None:
    captured = datetime(2030, 1, 1, 1, 0, 0, 7, tzinfo=CEST)
    entry = UsageEntry(provider="p", model="m", captured_at=captured)
    assert entry.to_json()["captured_at"] == "2029-12-31T23:00:00.000007Z"
    # Also when the field is set after construction, without validate().
    entry.updated_at = datetime(2030, 1, 1, 0, 30, tzinfo=CEST)
    assert entry.to_json()["updated_at"] == "2029-12-31T22:30:00.000000Z"
    back = UsageEntry.from_json(entry.to_json())
    assert back.captured_at == captured
    assert back.updated_at == datetime(2029, 12, 31, 22, 30, tzinfo=UTC)


def test_usage_json_refuses_a_naive_time_naming_the_field() -> None:
    entry = UsageEntry(provider="p", model="m")
    entry.updated_at = datetime(2030, 1, 1)
    with pytest.raises(ValidationError, match=r"^usage updated_at is a naive datetime"):
        entry.to_json()


def test_usage_json_round_trips_year_5_and_reads_the_unpadded_year_written_before() -> None:
    year_5 = datetime(5, 6, 7, 8, 9, 10, 11, tzinfo=UTC)
    entry = UsageEntry(provider="p", model="m", captured_at=year_5)
    data = entry.to_json()
    assert data["captured_at"] == "0005-06-07T08:09:10.000011Z"
    assert UsageEntry.from_json(data) == entry
    legacy = {**data, "captured_at": "5-06-07T08:09:10.000011Z"}
    assert UsageEntry.from_json(legacy) == entry


def test_usage_json_reads_iso_8601_with_an_offset_as_utc() -> None:
    entry = UsageEntry.from_json(
        {"provider": "p", "model": "m", "captured_at": "2030-01-01T02:00:00+02:00"}
    )
    assert entry.captured_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert entry.captured_at is not None
    assert entry.captured_at.tzinfo == UTC
    with pytest.raises(ValidationError, match="usage captured_at"):
        UsageEntry.from_json({"provider": "p", "model": "m", "captured_at": "2030-01-01"})


# --- the store (every backend) --------------------------------------------------------------


def _raw(store: Store, column: str, exec_id: str) -> Any:
    query = sa.text(f"SELECT {column} FROM workflow_states WHERE workflow_exec_id = :id")
    with sql_connection(store) as conn:
        return conn.execute(query, {"id": exec_id}).scalar_one()


@pytest.mark.parametrize(
    "created",
    [
        datetime(5, 1, 1, tzinfo=UTC),
        datetime(5, 1, 1, 5, 30, 0, 1, tzinfo=INDIA),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_the_store_round_trips_early_and_late_years_exactly(
    compozy_store: Store, created: datetime
) -> None:
    year_5 = datetime(5, 1, 1, tzinfo=UTC)
    usage = UsageSummary(entries=[UsageEntry(provider="p", model="m", captured_at=year_5)])
    stored = compozy_store.workflows.upsert_state(
        WorkflowState(workflow_id="wf", status=Status.RUNNING, created_at=created, usage=usage)
    )
    loaded = compozy_store.workflows.get_state(stored.workflow_exec_id)
    assert loaded.created_at == created
    assert loaded.created_at is not None
    assert loaded.created_at.tzinfo == UTC
    assert loaded.usage == usage
    raw_created = _raw(compozy_store, "created_at", stored.workflow_exec_id)
    if compozy_store.driver == "sqlite":
        # The stored text is the one format, byte for byte.
        assert raw_created == format_timestamp(created)
        assert raw_created.startswith(f"{created.astimezone(UTC).year:04d}-")
    else:
        assert raw_created == created
    raw_usage = _raw(compozy_store, "usage", stored.workflow_exec_id)
    if isinstance(raw_usage, str):
        raw_usage = json.loads(raw_usage)
    assert raw_usage[0]["captured_at"] == "0005-01-01T00:00:00.000000Z"

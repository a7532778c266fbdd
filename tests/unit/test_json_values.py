"""compozy.core's JSON rules: one depth limit (MAX_JSON_DEPTH) for every stored JSON value and
the API, and ``parse_json`` for JSON given from outside (``compozy run --input``)."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from compozy.core import MAX_JSON_DEPTH, parse_json
from compozy.core.values import check_json, check_json_object
from compozy.errors import ValidationError


def arrays(levels: int) -> str:
    """JSON text of arrays nested ``levels`` deep."""
    return "[" * levels + "]" * levels


def test_parse_json_reads_json_up_to_the_depth_limit() -> None:
    assert parse_json('{"name": "Ada", "n": [1, 2.5, null, true]}', "--input") == {
        "name": "Ada",
        "n": [1, 2.5, None, True],
    }
    value: Any = parse_json(arrays(MAX_JSON_DEPTH), "--input")
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 400, 5000, 100_000])
def test_parse_json_refuses_deeper_json_naming_the_field_not_a_recursion_error(
    levels: int,
) -> None:
    with pytest.raises(
        ValidationError, match=r"^--input is nested too deeply: .* deeper than 64 levels"
    ):
        parse_json(arrays(levels), "--input")


def test_parse_json_needs_no_stack_headroom_for_the_depth_check() -> None:
    # Deep text in a thread that is already deep in its stack: still a ValidationError.
    outcome: list[BaseException] = []

    def deep(frames: int) -> None:
        if frames:
            deep(frames - 1)
            return
        try:
            parse_json(arrays(5000), "input")
        except BaseException as exc:  # noqa: BLE001 - the type is what the test checks
            outcome.append(exc)

    thread = threading.Thread(target=deep, args=(sys.getrecursionlimit() - 50,))
    thread.start()
    thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ValidationError), repr(outcome[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": ', r"^--input is not valid JSON \(Expecting value at character 6\)"),
        ('{"a": NaN}', r"^--input\.a is nan; JSON cannot store NaN"),
        ('{"a": "\\u0000"}', r"^--input\.a contains the character U\+0000"),
        ('["\\ud800"]', r"^--input\[0\] contains a lone surrogate"),
    ],
)
def test_parse_json_refuses_what_no_database_stores(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_json(text, "--input")


def test_check_json_counts_objects_and_arrays_alike_and_scalars_not_at_all() -> None:
    value: Any = "leaf"
    for level in range(MAX_JSON_DEPTH):
        value = {"k": value} if level % 2 else [value]
    assert check_json(value, "output") is value  # 64 levels, then a string
    with pytest.raises(ValidationError, match=r"^output is nested too deeply"):
        check_json([value], "output")
    with pytest.raises(ValidationError, match=r"^error is nested too deeply"):
        check_json_object({"k": value}, "error")


def test_check_json_reports_the_first_problem_in_document_order() -> None:
    value = {"a": [1, float("inf")], "b": "\x00"}
    with pytest.raises(ValidationError, match=r"^input\.a\[1\] is inf"):
        check_json(value, "input")

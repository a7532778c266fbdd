"""Task timeouts (TIMED_OUT), retries with backoff, and what a timed-out container cancels."""

from __future__ import annotations

import uuid

import pytest

from compozy.core import Status
from compozy.store import Store

from . import tools_for_tests
from .conftest import RunYaml, tasks_by_id

# A tool that would sleep this long is always cut short by the timeouts below.
LONG = 20


@pytest.fixture
def key() -> str:
    """A key of this test alone for the counting tools."""
    return uuid.uuid4().hex


def calls(key: str) -> list[float]:
    return tools_for_tests.CALLS.get(key, [])


def workflow(*tasks: str) -> str:
    """A workflow ``w`` of these top-level tasks, each a YAML flow mapping."""
    return "id: w\ntasks:\n" + "".join(f"  - {task}\n" for task in tasks)


def fail_fast(*children: str) -> str:
    """A workflow ``w`` whose one task is ``fan``, a fail_fast parallel of these children."""
    listed = "".join(f"      - {child}\n" for child in children)
    fan = "  - id: fan\n    type: parallel\n    strategy: fail_fast\n    tasks:\n"
    return f"id: w\ntasks:\n{fan}{listed}"


# --- timeout ------------------------------------------------------------------------------------


def test_a_basic_task_past_its_timeout_ends_timed_out_and_fails_the_workflow(
    run_yaml: RunYaml, key: str
) -> None:
    final = run_yaml(
        workflow(
            f'{{id: slow, tool: "TOOLS:slow", with: {{key: {key}, seconds: {LONG}}}, '
            "timeout: 300ms}",
            "{id: after, tool: echo}",
        ),
        within=LONG / 4,
    )

    slow = final.tasks["slow"]
    assert (slow.status, slow.output) == (Status.TIMED_OUT, None)
    assert slow.error == {
        "message": "did not finish within its timeout of 0.3s",
        "code": "TIMED_OUT",
    }
    assert "after" not in final.tasks  # the workflow stopped at the timed-out task
    assert final.status is Status.FAILED
    assert final.output is None
    assert final.error is not None
    assert final.error["message"].startswith("task 'slow' timed out: did not finish")


def test_a_task_that_finishes_within_its_timeout_succeeds(run_yaml: RunYaml) -> None:
    final = run_yaml(workflow("{id: a, tool: echo, with: {x: 1}, timeout: 5s}"))

    assert final.status is Status.SUCCESS
    assert final.tasks["a"].output == {"x": 1}


def test_a_parallel_task_past_its_timeout_cancels_its_running_children(
    run_yaml: RunYaml, key: str
) -> None:
    final = run_yaml(
        f"""
        id: w
        tasks:
          - id: par
            type: parallel
            timeout: 300ms
            tasks:
              - {{id: quick, tool: echo, with: {{v: 1}}}}
              - {{id: slow, tool: "TOOLS:slow", with: {{key: {key}, seconds: {LONG}}}}}
        """,
        within=LONG / 4,
    )

    assert final.tasks["quick"].status is Status.SUCCESS
    assert final.tasks["slow"].status is Status.CANCELED
    assert final.tasks["slow"].error == {
        "message": "canceled: task 'par' did not finish within its timeout of 0.3s",
        "code": "CANCELED",
    }
    assert final.tasks["par"].status is Status.TIMED_OUT
    assert final.tasks["par"].error["code"] == "TIMED_OUT"  # type: ignore[index]
    assert final.status is Status.FAILED


def test_a_sequential_collection_past_its_timeout_starts_no_further_item(
    run_yaml: RunYaml, compozy_store: Store, key: str
) -> None:
    final = run_yaml(
        f"""
        id: w
        tasks:
          - id: each
            type: collection
            mode: sequential
            timeout: 500ms
            items: [0.05, {LONG}, 0.05, 0.05]
            task:
              {{id: nap, tool: "TOOLS:slow", with: {{key: {key}, seconds: "{{{{ item }}}}"}}}}
        """
    )

    naps = tasks_by_id(compozy_store, final.workflow_exec_id)["nap"]
    assert [t.status for t in naps] == [
        Status.SUCCESS,
        Status.CANCELED,
        Status.CANCELED,
        Status.CANCELED,
    ]
    assert naps[1].error["message"].startswith("canceled: task 'each'")  # type: ignore[index]
    assert naps[2].error["message"].startswith("not started: task 'each'")  # type: ignore[index]
    assert len(calls(key)) == 2  # the items after the timeout never ran
    assert final.tasks["each"].status is Status.TIMED_OUT


def test_a_composite_in_a_fail_fast_parallel_is_canceled_with_its_running_child(
    run_yaml: RunYaml, key: str
) -> None:
    steps = (
        f'{{id: steps, type: composite, tasks: [{{id: first, tool: "TOOLS:slow", '
        f"with: {{key: {key}, seconds: {LONG}}}}}, {{id: second, tool: echo}}]}}"
    )
    boom = f'{{id: boom, tool: "TOOLS:flaky", with: {{key: "{key}-boom", failures: 9}}}}'

    final = run_yaml(fail_fast(steps, boom), within=LONG / 4)

    assert final.tasks["boom"].status is Status.FAILED
    assert final.tasks["first"].status is Status.CANCELED
    assert "second" not in final.tasks
    assert final.tasks["steps"].status is Status.CANCELED
    assert final.tasks["steps"].error == {
        "message": "canceled: task 'boom' failed and 'fan' is fail_fast",
        "code": "CANCELED",
    }
    assert final.tasks["fan"].status is Status.FAILED


# --- retry --------------------------------------------------------------------------------------


def test_retry_tries_a_failing_tool_again_after_a_growing_backoff(
    run_yaml: RunYaml, compozy_store: Store, key: str
) -> None:
    shaky = (
        f'{{id: shaky, tool: "TOOLS:flaky", with: {{key: {key}, failures: 2}}, '
        "retry: {attempts: 3, backoff: 100ms, factor: 3}}"
    )

    final = run_yaml(workflow(shaky))

    assert final.status is Status.SUCCESS
    assert final.tasks["shaky"].output == {"call": 3}
    first, second, third = calls(key)
    assert second - first >= 0.1
    assert third - second >= 0.3
    # One task row, retried in place: no row per attempt.
    assert len(tasks_by_id(compozy_store, final.workflow_exec_id)["shaky"]) == 1


EXHAUSTED = {
    # retries: 1, as Compozy writes it: one more try after the default backoff of 1s.
    "retries-then-tool-failed": (
        '{id: t, tool: "TOOLS:flaky", with: {key: KEY, failures: 9}, retries: 1}',
        Status.FAILED,
        {"message": "call 2 failed (attempt 2 of 2)", "code": "TOOL_FAILED", "attempts": 2},
    ),
    # Each attempt gets the whole timeout; the last one timing out ends the task TIMED_OUT.
    "timeout-every-attempt": (
        '{id: t, tool: "TOOLS:slow", with: {key: KEY, seconds: 20}, timeout: 200ms,'
        " retry: {attempts: 2, backoff: 0}}",
        Status.TIMED_OUT,
        {
            "message": "did not finish within its timeout of 0.2s (attempt 2 of 2)",
            "code": "TIMED_OUT",
            "attempts": 2,
        },
    ),
}


@pytest.mark.parametrize(("task", "status", "error"), EXHAUSTED.values(), ids=EXHAUSTED.keys())
def test_the_last_failed_attempt_ends_the_task_with_its_error_and_the_attempt_count(
    run_yaml: RunYaml, key: str, task: str, status: Status, error: dict[str, object]
) -> None:
    final = run_yaml(workflow(task.replace("KEY", key)))

    assert len(calls(key)) == 2
    assert (final.tasks["t"].status, final.tasks["t"].error) == (status, error)


def test_a_template_failure_is_not_retried(run_yaml: RunYaml, key: str) -> None:
    final = run_yaml(
        f"""
        id: w
        tasks:
          - id: t
            tool: "TOOLS:flaky"
            with: {{key: {key}, failures: "{{{{ input.nope }}}}"}}
            retry: {{attempts: 5, backoff: 0}}
        """
    )

    assert calls(key) == []
    assert final.tasks["t"].error["code"] == "TEMPLATE_FAILED"  # type: ignore[index]
    assert "attempts" not in final.tasks["t"].error  # type: ignore[operator]


def test_a_fail_fast_cancel_ends_the_backoff_of_a_retrying_sibling(
    run_yaml: RunYaml, key: str
) -> None:
    patient = (
        f'{{id: patient, tool: "TOOLS:flaky", with: {{key: {key}, failures: 9}}, '
        f"retry: {{attempts: 3, backoff: {LONG}s}}}}"
    )
    boom = (
        f'{{id: boom, tool: "TOOLS:slow", with: {{key: "{key}-b", seconds: 0.2}}, timeout: 50ms}}'
    )

    final = run_yaml(fail_fast(patient, boom), within=LONG / 4)

    assert len(calls(key)) == 1  # canceled while waiting to try again
    assert final.tasks["boom"].status is Status.TIMED_OUT
    assert final.tasks["patient"].status is Status.CANCELED
    assert final.tasks["patient"].error == {
        "message": "canceled: task 'boom' timed out and 'fan' is fail_fast",
        "code": "CANCELED",
    }

"""Contract of ``WorkflowRepository``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from compozy.core import ExecutionType, Status
from compozy.errors import ValidationError, WorkflowNotFound, WorkflowNotReady
from compozy.store import Store
from compozy.workflow import OutputTransformer, WorkflowFilter, WorkflowState
from compozy_testkit.contract._build import at, chain, parallel, past, task, usage, workflow


def _completed(
    store: Store, wf: WorkflowState, transformer: OutputTransformer | None = None
) -> WorkflowState:
    """``complete_workflow`` of ``wf``, checking that what it returns is what it stored."""
    done = store.workflows.complete_workflow(wf.workflow_exec_id, transformer)
    assert store.workflows.get_state(wf.workflow_exec_id) == done
    return done


class WorkflowRepositoryContract:
    """Every method of the workflow repository, on whatever Store ``compozy_store`` gives."""

    # --- upsert_state ---------------------------------------------------------------------

    def test_upsert_inserts_and_returns_the_stored_state_with_timestamps(
        self, compozy_store: Store
    ) -> None:
        stored = workflow(compozy_store, input={"q": "hello"})
        assert stored.created_at is not None
        assert stored.updated_at is not None
        assert stored.created_at.utcoffset() is not None
        assert stored.tasks == {}
        assert compozy_store.workflows.get_state(stored.workflow_exec_id) == stored

    def test_upsert_updates_every_field_but_created_at(self, compozy_store: Store) -> None:
        first = workflow(compozy_store, created_at=at(0), input={"v": 1})
        changed = WorkflowState(
            workflow_exec_id=first.workflow_exec_id,
            workflow_id="renamed",
            status=Status.FAILED,
            usage=usage(),
            input={"v": 2},
            output={"o": True},
            error={"message": "boom"},
            created_at=at(500),
        )
        updated = compozy_store.workflows.upsert_state(changed)
        assert updated.created_at == at(0)
        assert (updated.workflow_id, updated.status) == ("renamed", Status.FAILED)
        assert (updated.input, updated.output, updated.error) == (
            {"v": 2},
            {"o": True},
            {"message": "boom"},
        )
        assert updated.usage == usage()
        assert compozy_store.workflows.get_state(first.workflow_exec_id) == updated

    def test_upsert_sets_created_at_to_now_when_missing_and_keeps_it_when_given(
        self, compozy_store: Store
    ) -> None:
        given = workflow(compozy_store, created_at=at(7))
        assert given.created_at == at(7)
        fresh = workflow(compozy_store)
        assert fresh.created_at is not None
        assert fresh.created_at > at(7)

    def test_updated_at_is_set_by_the_repository_and_never_goes_backwards(
        self, compozy_store: Store
    ) -> None:
        first = workflow(compozy_store, updated_at=at(-1000))
        assert first.updated_at is not None
        assert first.updated_at != at(-1000)
        stamps = [first.updated_at]
        for status in (Status.WAITING, Status.PAUSED, Status.RUNNING):
            stamp = compozy_store.workflows.update_status(first.workflow_exec_id, status).updated_at
            assert stamp is not None
            stamps.append(stamp)
        assert stamps == sorted(stamps)

    def test_upsert_refuses_an_invalid_state_before_any_sql(self, compozy_store: Store) -> None:
        state = WorkflowState(workflow_id="", status=Status.RUNNING)
        with pytest.raises(ValidationError, match="workflow_id"):
            compozy_store.workflows.upsert_state(state)
        assert compozy_store.workflows.list_states() == []

    # --- list_states ----------------------------------------------------------------------

    def test_list_states_is_empty_when_nothing_matches(self, compozy_store: Store) -> None:
        assert compozy_store.workflows.list_states() == []
        workflow(compozy_store, workflow_id="a")
        assert compozy_store.workflows.list_states(WorkflowFilter(workflow_id="zzz")) == []

    def test_list_states_orders_newest_first_and_breaks_ties_on_exec_id_descending(
        self, compozy_store: Store
    ) -> None:
        # Mixed case ids: byte order (B < a < b) must win over any locale collation.
        for exec_id, seconds in (("a", 1), ("B", 1), ("b", 1), ("old", 0), ("new", 2)):
            workflow(compozy_store, workflow_exec_id=exec_id, created_at=at(seconds))
        ids = [s.workflow_exec_id for s in compozy_store.workflows.list_states()]
        assert ids == ["new", "b", "a", "B", "old"]

    def test_list_states_filter_fields_are_anded(self, compozy_store: Store) -> None:
        workflow(compozy_store, workflow_exec_id="x1", workflow_id="x", status=Status.RUNNING)
        workflow(compozy_store, workflow_exec_id="x2", workflow_id="x", status=Status.SUCCESS)
        workflow(compozy_store, workflow_exec_id="y1", workflow_id="y", status=Status.RUNNING)
        repo = compozy_store.workflows

        def ids(**fields: Any) -> set[str]:
            return {s.workflow_exec_id for s in repo.list_states(WorkflowFilter(**fields))}

        assert ids(workflow_id="x") == {"x1", "x2"}
        assert ids(status=Status.RUNNING) == {"x1", "y1"}
        assert ids(workflow_id="x", status=Status.RUNNING) == {"x1"}
        assert ids(workflow_exec_id="y1", workflow_id="x") == set()

    def test_list_states_carries_every_task_of_each_state(self, compozy_store: Store) -> None:
        one = workflow(compozy_store, workflow_exec_id="one")
        two = workflow(compozy_store, workflow_exec_id="two")
        task(compozy_store, one, task_id="a")
        task(compozy_store, one, task_id="b")
        states = {s.workflow_exec_id: s for s in compozy_store.workflows.list_states()}
        assert set(states["one"].tasks) == {"a", "b"}
        assert states["two"].tasks == {}
        assert two.tasks == {}

    # --- update_status / get_state --------------------------------------------------------

    @pytest.mark.parametrize(
        ("method", "exec_id", "args"),
        [
            pytest.param("update_status", "missing-exec", (Status.RUNNING,), id="update_status"),
            pytest.param("get_state", "nope", (), id="get_state"),
            pytest.param("complete_workflow", "ghost", (), id="complete_workflow"),
            pytest.param("merge_usage", "gone", (usage(),), id="merge_usage"),
        ],
    )
    def test_a_missing_execution_raises_workflow_not_found(
        self, compozy_store: Store, method: str, exec_id: str, args: tuple[Any, ...]
    ) -> None:
        with pytest.raises(WorkflowNotFound, match=exec_id):
            getattr(compozy_store.workflows, method)(exec_id, *args)

    def test_update_status_changes_only_the_status(self, compozy_store: Store) -> None:
        stored = workflow(compozy_store, input={"k": 1})
        updated = compozy_store.workflows.update_status(stored.workflow_exec_id, Status.PAUSED)
        assert updated.status is Status.PAUSED
        assert (updated.input, updated.created_at) == (stored.input, stored.created_at)

    def test_get_state_returns_all_tasks_keyed_by_task_id_latest_wins(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="a", task_exec_id="a-old", created_at=at(1))
        task(compozy_store, wf, task_id="a", task_exec_id="a-new", created_at=at(2))
        # Equal created_at: the larger task_exec_id is the later one.
        task(compozy_store, wf, task_id="b", task_exec_id="b-B", created_at=at(3))
        task(compozy_store, wf, task_id="b", task_exec_id="b-a", created_at=at(3))
        state = compozy_store.workflows.get_state(wf.workflow_exec_id)
        assert {k: t.task_exec_id for k, t in state.tasks.items()} == {"a": "a-new", "b": "b-a"}

    def test_get_state_by_id_returns_the_most_recently_created_execution(
        self, compozy_store: Store
    ) -> None:
        workflow(compozy_store, workflow_exec_id="e1", workflow_id="w", created_at=at(1))
        workflow(compozy_store, workflow_exec_id="e3", workflow_id="w", created_at=at(3))
        workflow(compozy_store, workflow_exec_id="e2", workflow_id="w", created_at=at(2))
        workflow(compozy_store, workflow_exec_id="other", workflow_id="v", created_at=at(9))
        assert compozy_store.workflows.get_state_by_id("w").workflow_exec_id == "e3"
        with pytest.raises(WorkflowNotFound, match="absent"):
            compozy_store.workflows.get_state_by_id("absent")

    @pytest.mark.parametrize(
        ("method", "fields", "value"),
        [
            ("get_state_by_task_id", {}, "needle"),
            ("get_state_by_agent_id", {"agent_id": "needle", "action_id": "act"}, "needle"),
            ("get_state_by_tool_id", {"tool_id": "needle"}, "needle"),
        ],
    )
    def test_get_state_by_task_agent_or_tool_returns_the_most_recent_execution_having_it(
        self, compozy_store: Store, method: str, fields: dict[str, Any], value: str
    ) -> None:
        older = workflow(compozy_store, workflow_exec_id="older", workflow_id="w", created_at=at(1))
        newer = workflow(compozy_store, workflow_exec_id="newer", workflow_id="w", created_at=at(2))
        workflow(compozy_store, workflow_exec_id="newest", workflow_id="w", created_at=at(3))
        task_id = "needle" if method == "get_state_by_task_id" else "t"
        task(compozy_store, older, task_id=task_id, **fields)
        task(compozy_store, newer, task_id=task_id, **fields)
        find = getattr(compozy_store.workflows, method)
        assert find("w", value).workflow_exec_id == "newer"
        with pytest.raises(WorkflowNotFound):
            find("w", "other-value")
        with pytest.raises(WorkflowNotFound):
            find("unknown-workflow", value)

    # --- complete_workflow ----------------------------------------------------------------

    def test_complete_workflow_succeeds_when_every_top_level_task_finished_well(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="a", status=Status.SUCCESS, output={"x": 1})
        done = _completed(compozy_store, wf)
        assert done.status is Status.SUCCESS
        assert done.output == {"a": {"x": 1}}

    @pytest.mark.parametrize("failed", [Status.FAILED, Status.TIMED_OUT, Status.CANCELED])
    def test_complete_workflow_fails_when_a_top_level_task_is_in_the_failed_set(
        self, compozy_store: Store, failed: Status
    ) -> None:
        # A failed execution has no output (its error says what happened), not the outputs
        # of the tasks that did finish.
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="ok", status=Status.SUCCESS, output={"x": 1})
        task(compozy_store, wf, task_id="bad", status=failed)
        done = _completed(compozy_store, wf)
        assert (done.status, done.output) == (Status.FAILED, None)

    @pytest.mark.parametrize(
        ("parent_type", "child_status"),
        [(ExecutionType.PARALLEL, Status.FAILED), (ExecutionType.BASIC, Status.RUNNING)],
        ids=["failed-child", "running-child"],
    )
    def test_complete_workflow_looks_only_at_top_level_tasks_not_their_children(
        self, compozy_store: Store, parent_type: ExecutionType, child_status: Status
    ) -> None:
        # A failed child of a successful parent does not fail the workflow, and a running
        # child does not keep it from completing.
        wf = workflow(compozy_store)
        parent = task(compozy_store, wf, "p", Status.SUCCESS, execution_type=parent_type)
        task(compozy_store, wf, "c", child_status, parent=parent)
        assert compozy_store.workflows.complete_workflow(wf.workflow_exec_id).status is (
            Status.SUCCESS
        )

    @pytest.mark.parametrize(
        "running", [Status.PENDING, Status.RUNNING, Status.WAITING, Status.PAUSED]
    )
    def test_complete_workflow_with_a_running_top_level_task_raises_not_ready_and_changes_nothing(
        self, compozy_store: Store, running: Status
    ) -> None:
        wf = workflow(compozy_store)
        busy = task(compozy_store, wf, task_id="busy", status=running)
        before = compozy_store.workflows.get_state(wf.workflow_exec_id)
        with pytest.raises(WorkflowNotReady, match=busy.task_exec_id):
            compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        assert compozy_store.workflows.get_state(wf.workflow_exec_id) == before

    def test_complete_workflow_on_a_terminal_execution_returns_it_unchanged(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store, status=Status.CANCELED, output={"kept": True})
        task(compozy_store, wf, task_id="busy", status=Status.RUNNING)
        before = compozy_store.workflows.get_state(wf.workflow_exec_id)
        again = compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        assert again == before
        assert compozy_store.workflows.complete_workflow(wf.workflow_exec_id) == before

    def test_complete_workflow_default_output_is_each_top_level_task_output_by_task_id(
        self, compozy_store: Store
    ) -> None:
        # Children are left out (their container's output holds theirs), and so is every
        # row field: no parent ids, no execution types.
        wf = workflow(compozy_store)
        chain(
            compozy_store,
            wf,
            ("fan", Status.SUCCESS, ExecutionType.PARALLEL, {"results": [{"v": 1}]}),
            ("leaf", Status.SUCCESS, ExecutionType.BASIC, {"v": 1}),
        )
        task(compozy_store, wf, task_id="quiet", status=Status.SUCCESS, created_at=at(5))
        done = _completed(compozy_store, wf)
        assert done.output == {"fan": {"results": [{"v": 1}]}, "quiet": None}

    def test_complete_workflow_with_no_tasks_succeeds_with_empty_output(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        done = compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        assert (done.status, done.output) == (Status.SUCCESS, {})

    def test_complete_workflow_stores_the_transformer_output(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store, input={"name": "Ada"})
        task(compozy_store, wf, task_id="greet", status=Status.SUCCESS, output={"text": "hi"})
        seen: list[WorkflowState] = []

        def transform(state: WorkflowState) -> dict[str, Any]:
            seen.append(state)
            greeting, name = state.tasks["greet"].output or {}, state.input or {}
            return {"greeting": f"{greeting['text']} {name['name']}"}

        done = compozy_store.workflows.complete_workflow(wf.workflow_exec_id, transform)
        assert done.output == {"greeting": "hi Ada"}
        assert seen[0].status is Status.SUCCESS
        assert compozy_store.workflows.get_state(wf.workflow_exec_id).output == done.output

    def test_complete_workflow_transformer_returning_none_stores_an_empty_output(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        done = compozy_store.workflows.complete_workflow(wf.workflow_exec_id, lambda _s: None)
        assert (done.status, done.output) == (Status.SUCCESS, {})

    @pytest.mark.parametrize(
        ("exception", "message"),
        [
            (RuntimeError("template exploded"), "template exploded"),
            # Without a message, the type name stands for it.
            (ValueError(), "ValueError"),
            (KeyError(), "KeyError"),
            (RuntimeError(""), "RuntimeError"),
        ],
        ids=["with-message", "ValueError", "KeyError", "RuntimeError-empty"],
    )
    def test_complete_workflow_transformer_failure_stores_failed_with_error_and_no_output(
        self, compozy_store: Store, exception: Exception, message: str
    ) -> None:
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="a", status=Status.SUCCESS, output={"x": 1})
        parallel(compozy_store, wf, "fan", Status.SUCCESS, output={"n": 2})

        def broken(_state: WorkflowState) -> dict[str, Any]:
            raise exception

        done = _completed(compozy_store, wf, broken)
        assert done.status is Status.FAILED
        assert done.error == {"message": message, "code": "OUTPUT_TRANSFORMATION_FAILED"}
        assert done.output is None

    def test_complete_workflow_transformer_returning_unstorable_output_is_a_failure(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        done = compozy_store.workflows.complete_workflow(
            wf.workflow_exec_id, lambda _s: {"bad": float("nan")}
        )
        assert done.status is Status.FAILED
        assert done.error is not None
        assert done.error["code"] == "OUTPUT_TRANSFORMATION_FAILED"

    def test_complete_workflow_transformer_gets_a_deep_copy_so_its_changes_are_not_stored(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store, input={"deep": {"k": 1}})
        task(compozy_store, wf, task_id="a", status=Status.SUCCESS, output={"nested": {"k": 1}})
        seen: list[dict[str, Any]] = []

        def meddle(state: WorkflowState) -> dict[str, Any]:
            seen.append(copy.deepcopy(state.output or {}))
            task_output = state.tasks["a"].output or {}
            task_output["nested"]["k"] = 99
            (state.input or {})["deep"]["k"] = 99
            state.status = Status.CANCELED
            state.error = {"message": "meddled"}
            raise RuntimeError("after meddling")

        done = _completed(compozy_store, wf, meddle)
        assert seen == [{"a": {"nested": {"k": 1}}}]
        assert done.status is Status.FAILED
        assert done.output is None
        assert done.error == {"message": "after meddling", "code": "OUTPUT_TRANSFORMATION_FAILED"}
        assert done.input == {"deep": {"k": 1}}
        assert done.tasks["a"].output == {"nested": {"k": 1}}

    @pytest.mark.parametrize("status", [Status.SUCCESS, Status.FAILED])
    def test_complete_workflow_transformer_changing_its_argument_changes_only_the_output(
        self, compozy_store: Store, status: Status
    ) -> None:
        # The status comes from the tasks (FAILED is kept when the transformer succeeds), and
        # what the transformer does to its argument changes neither status nor error.
        wf = workflow(compozy_store)
        task(compozy_store, wf, "a", status, output={"x": 1})
        seen: list[Status] = []

        def meddle(state: WorkflowState) -> dict[str, Any]:
            seen.append(state.status)
            state.status = Status.CANCELED
            state.error = {"message": "meddled"}
            return {"r": 1}

        done = _completed(compozy_store, wf, meddle)
        assert seen == [status]
        assert (done.status, done.output, done.error) == (status, {"r": 1}, None)

    def test_complete_workflow_sets_updated_at_forward_and_returns_the_stored_value(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        task(compozy_store, wf, task_id="a", status=Status.SUCCESS)
        before = compozy_store.workflows.get_state(wf.workflow_exec_id)
        past(before.updated_at)
        done = compozy_store.workflows.complete_workflow(wf.workflow_exec_id)
        assert before.updated_at is not None
        assert done.updated_at is not None
        assert done.updated_at > before.updated_at
        assert done.created_at == before.created_at
        stored = compozy_store.workflows.get_state(wf.workflow_exec_id)
        assert stored.updated_at == done.updated_at
        assert stored == done

    def test_complete_workflow_default_output_keeps_every_collection_child_result(
        self, compozy_store: Store
    ) -> None:
        # Collection children share one task id: the default output must not keep only the
        # last of them, nor name their parent.
        wf = workflow(compozy_store)
        items = task(
            compozy_store,
            wf,
            "each",
            Status.SUCCESS,
            execution_type=ExecutionType.COLLECTION,
            output={"results": [{"i": 0}, {"i": 1}]},
        )
        for i in range(2):
            task(compozy_store, wf, "one", Status.SUCCESS, parent=items, output={"i": i})
        done = _completed(compozy_store, wf)
        assert done.status is Status.SUCCESS
        assert done.output == {"each": {"results": [{"i": 0}, {"i": 1}]}}

    def test_complete_workflow_default_output_takes_the_latest_of_a_repeated_top_level_id(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store)
        for index in (2, 0, 1):  # stored out of order; the latest created wins
            task(
                compozy_store,
                wf,
                "again",
                Status.SUCCESS,
                output={"n": index},
                created_at=at(index),
            )
        assert _completed(compozy_store, wf).output == {"again": {"n": 2}}

    def test_complete_workflow_not_ready_names_every_running_top_level_task_in_order(
        self, compozy_store: Store
    ) -> None:
        wf = workflow(compozy_store, workflow_exec_id="not-ready")
        for task_exec_id in ("run-b", "run-a"):
            task(compozy_store, wf, task_exec_id, Status.RUNNING, task_exec_id=task_exec_id)
        task(compozy_store, wf, task_id="done", task_exec_id="run-0", status=Status.SUCCESS)
        with pytest.raises(WorkflowNotReady) as not_ready:
            compozy_store.workflows.complete_workflow("not-ready")
        message = str(not_ready.value)
        assert "not-ready" in message
        assert "run-a, run-b" in message
        assert "run-0" not in message

    # --- merge_usage ----------------------------------------------------------------------

    def test_merge_usage_with_none_or_empty_summary_is_a_no_op(self, compozy_store: Store) -> None:
        from compozy.usage import UsageSummary

        wf = workflow(compozy_store)
        assert compozy_store.workflows.merge_usage(wf.workflow_exec_id, None) is None
        assert compozy_store.workflows.merge_usage(wf.workflow_exec_id, UsageSummary()) is None
        assert compozy_store.workflows.get_state(wf.workflow_exec_id) == wf

    def test_merge_usage_sums_matching_entries_and_keeps_others(self, compozy_store: Store) -> None:
        wf = workflow(compozy_store, usage=usage(prompt=1, completion=2))
        merged = compozy_store.workflows.merge_usage(
            wf.workflow_exec_id, usage(provider="OpenAI", model="GPT-4o", prompt=10, completion=20)
        )
        compozy_store.workflows.merge_usage(wf.workflow_exec_id, usage(provider="anthropic"))
        assert merged is not None
        assert [(e.prompt_tokens, e.total_tokens) for e in merged.entries] == [(11, 33)]
        stored = compozy_store.workflows.get_state(wf.workflow_exec_id).usage
        assert stored is not None
        assert [(e.provider, e.total_tokens) for e in stored.entries] == [
            ("anthropic", 15),
            ("openai", 33),
        ]

"""Contract of ``ExecutionQueue``: claims, leases, fencing, release, abort and cancellation.

Tests taking ``compozy_store`` hold for any implementation of the protocols (``store.queue``,
``tx.queue`` inside ``store.transaction()``). Leases are wall-clock time, so the takeover tests
claim with a short lease and really wait for it to run out; every other test claims with a
lease far longer than it runs. The multi-process test opens a Store per process on the plugin's
database (``compozy_database.config``), so it needs a database other processes can see.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from compozy.core import Component, ExecutionType, Status
from compozy.errors import (
    ClaimLost,
    CompozyError,
    ConflictError,
    ExecutionFinished,
    ValidationError,
    WorkflowNotFound,
)
from compozy.store import Store, TransactionScope
from compozy.task import TaskState
from compozy.workflow import Claim, Renewal, WorkflowFilter, WorkflowState, WorkflowSummary
from compozy_testkit.contract._build import at, past, task, together, workflow
from compozy_testkit.contract._processes import ProcessPool
from compozy_testkit.databases import TestDatabase

LEASE = 30.0
"""Seconds: a lease no test outlives unless it waits for it on purpose."""
SHORT_LEASE = 0.2
"""Seconds: a lease the takeover tests wait out."""
THREADS = 8
PROCESSES = 3
POOL = 48
"""PENDING executions the concurrent claimers share."""
BATCH = 3
"""Executions each claim call of the concurrent claimers asks for."""
T = TypeVar("T")


def _pending(
    store: Store,
    exec_id: str,
    seconds: float,
    *,
    tasks: Mapping[str, Status] | None = None,
    **fields: Any,
) -> WorkflowState:
    """A PENDING execution created ``seconds`` after T0 (claims go oldest first), with a
    top-level task of each ``tasks`` status, by task_id."""
    wf = workflow(
        store, workflow_exec_id=exec_id, status=Status.PENDING, created_at=at(seconds), **fields
    )
    for task_id, status in (tasks or {}).items():
        task(store, wf, task_id, status)
    return wf


def _claimed(
    store: Store,
    exec_id: str,
    *,
    lease: float = LEASE,
    tasks: Mapping[str, Status] | None = None,
) -> Claim:
    """A PENDING execution (with ``tasks``, as ``_pending``), the only one, claimed by w1."""
    _pending(store, exec_id, 0, tasks=tasks)
    (claim,) = store.queue.claim("w1", limit=1, lease=lease)
    assert claim.workflow_exec_id == exec_id
    return claim


def _summary(store: Store, exec_id: str) -> WorkflowSummary:
    """The execution as a list shows it: with its worker, lease and claim count."""
    page = store.workflows.list_page(WorkflowFilter(workflow_exec_id=exec_id))
    assert [s.workflow_exec_id for s in page.items] == [exec_id]
    return page.items[0]


def _ids(claims: list[Claim]) -> list[str]:
    return [c.workflow_exec_id for c in claims]


def _outlive(*claims: Claim) -> None:
    """Wait until every claim's lease has run out: a real wait, leases are wall-clock time."""
    latest = max(c.lease_expires_at for c in claims)
    time.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.05)


def _task_statuses(store: Store, exec_id: str) -> dict[str, Status]:
    return {k: t.status for k, t in store.workflows.get_state(exec_id).tasks.items()}


def _claim_until_empty(store: Store, worker_id: str) -> list[tuple[str, int]]:
    """Claim batches until none is left: (exec id, claim_count) of every claim taken."""
    taken: list[tuple[str, int]] = []
    while claims := store.queue.claim(worker_id, limit=BATCH, lease=LEASE):
        taken.extend((c.workflow_exec_id, c.claim_count) for c in claims)
    return taken


def _claim_in_process(store: Store, index: int, prefix: str) -> tuple[str, list[tuple[str, int]]]:
    """A ``ProcessPool`` job: as worker ``{prefix}{index}``, claim until none is left."""
    worker_id = f"{prefix}{index}"
    return worker_id, _claim_until_empty(store, worker_id)


class ExecutionQueueContract:
    """Every method of the execution queue, on whatever Store ``compozy_store`` gives."""

    # --- claim ----------------------------------------------------------------------------

    def test_claim_takes_pending_executions_oldest_first_and_marks_them_running(
        self, compozy_store: Store
    ) -> None:
        # Mixed-case ids on one timestamp: byte order (B < a) breaks the tie.
        for exec_id, seconds in (("c", 2), ("a", 1), ("d", 3), ("B", 1)):
            _pending(compozy_store, exec_id, seconds)
        before = datetime.now(UTC)
        first = compozy_store.queue.claim("w1", limit=1, lease=LEASE)
        claims = first + compozy_store.queue.claim("w1", limit=2, lease=LEASE)
        after = datetime.now(UTC)
        assert _ids(first) == ["B"]
        assert _ids(claims) == ["B", "a", "c"]
        for claim in claims:
            assert (claim.worker_id, claim.claim_count) == ("w1", 1)
            assert (claim.previous_worker, claim.cancel_requested) == (None, False)
            lease = timedelta(seconds=LEASE)
            assert before + lease <= claim.lease_expires_at <= after + lease
            summary = _summary(compozy_store, claim.workflow_exec_id)
            assert summary.status is Status.RUNNING
            assert (summary.worker_id, summary.claim_count) == ("w1", 1)
            assert summary.lease_expires_at == claim.lease_expires_at
        assert _ids(compozy_store.queue.claim("w2", limit=10, lease=LEASE)) == ["d"]
        assert compozy_store.queue.claim("w3", limit=10, lease=LEASE) == []
        assert _summary(compozy_store, "c").worker_id == "w1"

    def test_claim_order_is_created_at_first_whatever_the_ids_then_id_ascending(
        self, compozy_store: Store
    ) -> None:
        # The oldest execution has the greatest id; "b" and "q" share an instant.
        for exec_id, seconds in (("q", 2), ("a", 1), ("z", 0), ("b", 2)):
            _pending(compozy_store, exec_id, seconds)
        one_by_one = [compozy_store.queue.claim("w1", limit=1, lease=LEASE) for _ in range(3)]
        assert [_ids(claims) for claims in one_by_one] == [["z"], ["a"], ["b"]]
        for claims in one_by_one:
            compozy_store.queue.release(claims[0])
        # One call taking several returns them in the same order.
        assert _ids(compozy_store.queue.claim("w2", limit=4, lease=LEASE)) == ["z", "a", "b", "q"]

    def test_claim_of_given_workflows_takes_only_their_executions(
        self, compozy_store: Store
    ) -> None:
        for n, workflow_id in enumerate(("alpha", "beta", "gamma", "alpha", "beta")):
            _pending(compozy_store, f"{workflow_id}-{n}", n, workflow_id=workflow_id)
        assert compozy_store.queue.claim("w1", limit=10, lease=LEASE, workflow_ids=[]) == []
        taken = compozy_store.queue.claim(
            "w1", limit=10, lease=LEASE, workflow_ids={"alpha", "gamma", "absent"}
        )
        assert _ids(taken) == ["alpha-0", "gamma-2", "alpha-3"]
        with pytest.raises(ValidationError, match="workflow_ids"):
            compozy_store.queue.claim("w1", limit=10, lease=LEASE, workflow_ids=[""])
        pending = compozy_store.workflows.list_states(WorkflowFilter(status=Status.PENDING))
        assert sorted(s.workflow_exec_id for s in pending) == ["beta-1", "beta-4"]

    def test_claim_never_takes_live_leases_or_waiting_paused_and_terminal_executions(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "held", 0)
        assert _ids(compozy_store.queue.claim("w1", limit=1, lease=LEASE)) == ["held"]
        others = (
            Status.WAITING,
            Status.PAUSED,
            Status.SUCCESS,
            Status.FAILED,
            Status.TIMED_OUT,
            Status.CANCELED,
        )
        for n, status in enumerate(others, start=1):
            workflow(compozy_store, workflow_exec_id=status.value, status=status, created_at=at(n))
        before = {s.workflow_exec_id: s for s in compozy_store.workflows.list_states()}
        assert compozy_store.queue.claim("w2", limit=100, lease=LEASE) == []
        assert {s.workflow_exec_id: s for s in compozy_store.workflows.list_states()} == before
        assert _summary(compozy_store, "held").worker_id == "w1"
        assert {_summary(compozy_store, s.value).claim_count for s in others} == {0}

    @pytest.mark.parametrize(
        ("fields", "named"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": True}, "limit"),
            ({"limit": 2.0}, "limit"),
            ({"lease": 0}, "lease"),
            ({"lease": -1.0}, "lease"),
            ({"lease": True}, "lease"),
        ],
    )
    def test_claim_refuses_a_bad_limit_or_lease_and_claims_nothing(
        self, compozy_store: Store, fields: dict[str, Any], named: str
    ) -> None:
        _pending(compozy_store, "p", 0)
        args: dict[str, Any] = {"limit": 1, "lease": LEASE, **fields}
        with pytest.raises(ValidationError, match=named):
            compozy_store.queue.claim("w1", **args)
        assert _summary(compozy_store, "p").status is Status.PENDING
        assert _summary(compozy_store, "p").claim_count == 0

    def test_claim_execution_claims_that_one_execution_whatever_its_age(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "old", 1)
        _pending(compozy_store, "young", 2)
        claim = compozy_store.queue.claim_execution("young", "w1", lease=LEASE)
        assert (claim.workflow_exec_id, claim.worker_id, claim.claim_count) == ("young", "w1", 1)
        assert claim.previous_worker is None
        assert _summary(compozy_store, "young").status is Status.RUNNING
        assert _ids(compozy_store.queue.claim("w2", limit=10, lease=LEASE)) == ["old"]

    def test_claim_execution_errors_name_the_execution(self, compozy_store: Store) -> None:
        _pending(compozy_store, "held-exec", 0)
        workflow(compozy_store, workflow_exec_id="done-exec", status=Status.SUCCESS)
        compozy_store.queue.claim_execution("held-exec", "owner-w", lease=LEASE)
        with pytest.raises(WorkflowNotFound, match="missing-exec"):
            compozy_store.queue.claim_execution("missing-exec", "w2", lease=LEASE)
        with pytest.raises(ExecutionFinished, match="done-exec") as finished:
            compozy_store.queue.claim_execution("done-exec", "w2", lease=LEASE)
        assert isinstance(finished.value, ConflictError)
        with pytest.raises(ClaimLost, match="held-exec") as held:
            compozy_store.queue.claim_execution("held-exec", "w2", lease=LEASE)
        assert "owner-w" in str(held.value)
        held_row = _summary(compozy_store, "held-exec")
        assert (held_row.worker_id, held_row.claim_count) == ("owner-w", 1)
        assert compozy_store.workflows.get_state("done-exec").status is Status.SUCCESS

    # --- concurrency ----------------------------------------------------------------------

    def test_threads_claiming_from_one_pool_claim_every_execution_exactly_once(
        self, compozy_store: Store
    ) -> None:
        pool = [_pending(compozy_store, f"e{n:03d}", n).workflow_exec_id for n in range(POOL)]
        outcomes = together(THREADS, lambda i: _claim_until_empty(compozy_store, f"t{i}"))
        errors = [repr(o) for o in outcomes if isinstance(o, Exception)]
        assert errors == [], errors
        taken = [
            (exec_id, f"t{i}", count)
            for i, o in enumerate(outcomes)
            if not isinstance(o, Exception)
            for exec_id, count in o
        ]
        _assert_claimed_exactly_once(compozy_store, pool, taken)
        assert compozy_store.queue.claim("late", limit=POOL, lease=LEASE) == []

    def test_threads_claiming_one_execution_at_once_leave_exactly_one_owner(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "contested", 0)
        outcomes = together(
            THREADS,
            lambda i: compozy_store.queue.claim_execution("contested", f"t{i}", lease=LEASE),
        )
        won = [o for o in outcomes if isinstance(o, Claim)]
        lost = [o for o in outcomes if isinstance(o, ClaimLost)]
        assert (len(won), len(lost)) == (1, THREADS - 1), outcomes
        summary = _summary(compozy_store, "contested")
        assert (summary.worker_id, summary.claim_count) == (won[0].worker_id, 1)

    @pytest.mark.compozy_backends(
        "sqlite-file", "postgres", reason="needs a database other processes can open"
    )
    def test_processes_claiming_from_one_pool_claim_every_execution_exactly_once(
        self, compozy_database: TestDatabase
    ) -> None:
        store = compozy_database.store()
        assert compozy_database.config is not None
        pool = [_pending(store, f"e{n:03d}", n).workflow_exec_id for n in range(POOL)]
        with ProcessPool(PROCESSES) as processes:
            outcomes = processes.run(compozy_database.config, _claim_in_process, "p")
        assert outcomes.errors == [], outcomes.errors
        taken = [
            (exec_id, worker, count) for worker, got in outcomes.values for exec_id, count in got
        ]
        _assert_claimed_exactly_once(store, pool, taken)

    # --- lease expiry and takeover --------------------------------------------------------

    def test_an_expired_lease_is_taken_over_and_the_old_claim_is_fenced_off(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "x", 1)
        _pending(compozy_store, "y", 2)
        _pending(compozy_store, "z", 3)
        old = compozy_store.queue.claim("w1", limit=3, lease=SHORT_LEASE)
        old_x, old_y, old_z = old
        _outlive(*old)
        # claim() takes the oldest expired lease over, claim_execution() the one it names.
        new_x = compozy_store.queue.claim("w2", limit=1, lease=LEASE)
        assert [(c.workflow_exec_id, c.claim_count, c.previous_worker) for c in new_x] == [
            ("x", 2, "w1")
        ]
        new_y = compozy_store.queue.claim_execution("y", "w3", lease=LEASE)
        assert (new_y.claim_count, new_y.previous_worker) == (2, "w1")
        # The same worker claiming its own expired execution again gets a new claim count,
        # and its old claim is fenced off by that count.
        new_z = compozy_store.queue.claim_execution("z", "w1", lease=LEASE)
        assert new_z.claim_count == 2

        for stale in (old_x, old_y, old_z):
            with (
                pytest.raises(ClaimLost, match=stale.workflow_exec_id),
                compozy_store.transaction() as tx,
            ):
                tx.queue.fence(stale, exclusive=True)
                tx.workflows.update_status(stale.workflow_exec_id, Status.SUCCESS)
            with pytest.raises(ClaimLost, match=stale.workflow_exec_id):
                compozy_store.queue.release(stale)
            with pytest.raises(ClaimLost, match=stale.workflow_exec_id):
                compozy_store.queue.abort(stale, Status.FAILED, {"message": "stale"})
        for old_claim, new_claim in ((old_x, new_x[0]), (old_y, new_y), (old_z, new_z)):
            exec_id = old_claim.workflow_exec_id
            assert compozy_store.queue.renew([old_claim], lease=LEASE) == Renewal(
                frozenset({exec_id}), frozenset()
            )
            assert compozy_store.queue.renew([new_claim], lease=LEASE) == Renewal(
                frozenset(), frozenset()
            )
            summary = _summary(compozy_store, exec_id)
            assert summary.status is Status.RUNNING, "a fenced-off write got through"
            assert (summary.worker_id, summary.claim_count) == (new_claim.worker_id, 2)
            with compozy_store.transaction() as tx:
                tx.queue.fence(new_claim)

    def test_a_takeover_claim_sees_that_cancellation_was_requested(
        self, compozy_store: Store
    ) -> None:
        old = _claimed(compozy_store, "x", lease=SHORT_LEASE)
        compozy_store.queue.request_cancel("x")
        _outlive(old)
        (new,) = compozy_store.queue.claim("w2", limit=1, lease=LEASE)
        assert (new.workflow_exec_id, new.previous_worker, new.cancel_requested) == (
            "x",
            "w1",
            True,
        )

    # --- renew ----------------------------------------------------------------------------

    def test_renew_extends_held_leases_and_reports_lost_and_cancel_requested(
        self, compozy_store: Store
    ) -> None:
        for n, exec_id in enumerate(("held", "released", "aborted", "completed", "cancel")):
            _pending(compozy_store, exec_id, n)
        claims = compozy_store.queue.claim("w1", limit=5, lease=LEASE)
        held, released, aborted, _completed, cancel = claims
        compozy_store.queue.release(released)
        compozy_store.queue.abort(aborted, Status.FAILED, {"message": "gave up"})
        compozy_store.workflows.update_status("completed", Status.SUCCESS)
        compozy_store.queue.request_cancel("cancel")
        before = datetime.now(UTC)
        renewal = compozy_store.queue.renew(claims, lease=2 * LEASE)
        assert renewal == Renewal(
            lost=frozenset({"released", "aborted", "completed"}),
            cancel_requested=frozenset({"cancel"}),
        )
        for claim in (held, cancel):
            lease_end = _summary(compozy_store, claim.workflow_exec_id).lease_expires_at
            assert lease_end is not None
            assert lease_end >= before + timedelta(seconds=2 * LEASE)
            assert lease_end > claim.lease_expires_at
        assert _summary(compozy_store, "released").worker_id is None
        assert _summary(compozy_store, "released").status is Status.PENDING

    def test_renew_of_no_claims_is_empty_and_a_bad_lease_is_refused(
        self, compozy_store: Store
    ) -> None:
        assert compozy_store.queue.renew([], lease=LEASE) == Renewal(frozenset(), frozenset())
        claim = _claimed(compozy_store, "x")
        with pytest.raises(ValidationError, match="lease"):
            compozy_store.queue.renew([claim], lease=0)
        assert _summary(compozy_store, "x").lease_expires_at == claim.lease_expires_at

    def test_renew_reports_lost_a_claim_of_the_same_worker_with_an_older_claim_count(
        self, compozy_store: Store
    ) -> None:
        old = _claimed(compozy_store, "x")
        new = compozy_store.queue.claim_execution("x", "w1", lease=LEASE)
        assert (old.claim_count, new.claim_count) == (1, 2)
        assert compozy_store.queue.renew([old], lease=LEASE) == Renewal(
            frozenset({"x"}), frozenset()
        )
        assert compozy_store.queue.renew([new], lease=LEASE) == Renewal(frozenset(), frozenset())
        summary = _summary(compozy_store, "x")
        assert (summary.worker_id, summary.claim_count) == ("w1", 2)

    def test_renew_sets_each_lease_to_now_plus_the_given_seconds(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "a", 0)
        _pending(compozy_store, "b", 1)
        (a,) = compozy_store.queue.claim("w1", limit=1, lease=LEASE)
        (b,) = compozy_store.queue.claim("w2", limit=1, lease=LEASE)
        for seconds in (3 * LEASE, 5.0):  # longer, then shorter than the lease it had
            before = datetime.now(UTC)
            renewal = compozy_store.queue.renew([a, b], lease=seconds)
            after = datetime.now(UTC)
            assert renewal == Renewal(frozenset(), frozenset())
            for claim in (a, b):
                lease_end = _summary(compozy_store, claim.workflow_exec_id).lease_expires_at
                assert lease_end is not None
                span = timedelta(seconds=seconds)
                assert before + span <= lease_end <= after + span

    def test_renew_of_a_claim_naming_another_worker_is_lost_and_extends_nothing(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "x")
        forged = dataclasses.replace(claim, worker_id="w2")
        assert compozy_store.queue.renew([forged], lease=3 * LEASE) == Renewal(
            frozenset({"x"}), frozenset()
        )
        summary = _summary(compozy_store, "x")
        assert (summary.worker_id, summary.claim_count) == ("w1", 1)
        assert summary.lease_expires_at == claim.lease_expires_at

    # --- fence ----------------------------------------------------------------------------

    def test_fence_outside_a_transaction_is_refused(self, compozy_store: Store) -> None:
        claim = _claimed(compozy_store, "x")
        with pytest.raises(CompozyError, match="transaction") as refused:
            compozy_store.queue.fence(claim)
        assert not isinstance(refused.value, ClaimLost)

    def test_fence_lets_the_holder_write_in_the_same_transaction(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "x")
        with compozy_store.transaction() as tx:
            tx.queue.fence(claim)
            tx.tasks.upsert_state(_task_of(tx, "x", "fenced-task"))

        def complete(tx: TransactionScope) -> Status:
            tx.queue.fence(claim, exclusive=True)  # it updates the workflow row too
            return tx.workflows.update_status("x", Status.SUCCESS).status

        assert compozy_store.run_in_transaction(complete) is Status.SUCCESS
        state = compozy_store.workflows.get_state("x")
        assert (state.status, set(state.tasks)) == (Status.SUCCESS, {"fenced-task"})

    @pytest.mark.parametrize("exclusive", [False, True], ids=["shared", "exclusive"])
    def test_a_fenced_transaction_holds_off_a_takeover_until_it_ends(
        self, compozy_store: Store, exclusive: bool
    ) -> None:
        claim = _claimed(compozy_store, "x", lease=SHORT_LEASE)
        events: list[str] = []
        started = threading.Event()
        taken: list[Claim] = []

        def take_over() -> None:
            started.set()
            taken.append(compozy_store.queue.claim_execution("x", "w2", lease=LEASE))
            events.append("w2 claimed")

        thread = threading.Thread(target=take_over)
        with compozy_store.transaction() as tx:
            tx.queue.fence(claim, exclusive=exclusive)
            _outlive(claim)  # the lease runs out while the fenced transaction is open
            thread.start()
            started.wait()
            time.sleep(0.2)  # give the takeover every chance to (wrongly) get through
            tx.tasks.upsert_state(_task_of(tx, "x", "written-under-the-fence"))
            events.append("w1 wrote")
        thread.join()
        assert events == ["w1 wrote", "w2 claimed"]
        assert [(c.claim_count, c.previous_worker) for c in taken] == [(2, "w1")]
        assert set(compozy_store.workflows.get_state("x").tasks) == {"written-under-the-fence"}

    def test_fence_raises_claim_lost_once_the_execution_is_terminal(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "x")
        compozy_store.workflows.update_status("x", Status.SUCCESS)

        def write(tx: TransactionScope) -> None:
            tx.queue.fence(claim, exclusive=True)
            tx.workflows.update_status("x", Status.RUNNING)

        with pytest.raises(ClaimLost, match="x"):
            compozy_store.run_in_transaction(write)
        assert compozy_store.workflows.get_state("x").status is Status.SUCCESS

    def test_a_claim_still_holds_while_its_owner_sets_the_execution_waiting_or_paused(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "waits", 0)
        _pending(compozy_store, "pauses", 1)
        claims = compozy_store.queue.claim("w1", limit=2, lease=LEASE)
        for claim, status in zip(claims, (Status.WAITING, Status.PAUSED), strict=True):
            with compozy_store.transaction() as tx:
                tx.queue.fence(claim, exclusive=True)
                tx.workflows.update_status(claim.workflow_exec_id, status)
        renewal = compozy_store.queue.renew(claims, lease=LEASE)
        fenced_off = []
        for claim in claims:
            try:
                with compozy_store.transaction() as tx:
                    tx.queue.fence(claim)
            except ClaimLost as exc:
                fenced_off.append(str(exc))
        assert (renewal, fenced_off) == (Renewal(frozenset(), frozenset()), []), (
            f"renew: {renewal}; fence: {fenced_off}"
        )

    # --- release --------------------------------------------------------------------------

    def test_release_returns_the_execution_pending_unclaimed_with_its_running_tasks_pending(
        self, compozy_store: Store
    ) -> None:
        statuses = {
            "pending": Status.PENDING,
            "running": Status.RUNNING,
            "waiting": Status.WAITING,
            "paused": Status.PAUSED,
            "done": Status.SUCCESS,
            "failed": Status.FAILED,
        }
        claim = _claimed(compozy_store, "x", tasks=statuses)
        compozy_store.queue.release(claim)
        summary = _summary(compozy_store, "x")
        assert summary.status is Status.PENDING
        assert (summary.worker_id, summary.lease_expires_at, summary.claim_count) == (None, None, 1)
        assert _task_statuses(compozy_store, "x") == {
            "pending": Status.PENDING,
            "running": Status.PENDING,
            "waiting": Status.PENDING,
            "paused": Status.PENDING,
            "done": Status.SUCCESS,
            "failed": Status.FAILED,
        }
        # Another worker resumes it at once, and the released claim is fenced off.
        (again,) = compozy_store.queue.claim("w2", limit=1, lease=LEASE)
        assert (again.workflow_exec_id, again.claim_count, again.previous_worker) == ("x", 2, None)
        with pytest.raises(ClaimLost, match="x"):
            compozy_store.queue.release(claim)
        assert _summary(compozy_store, "x").worker_id == "w2"

    def test_release_of_a_claim_no_longer_held_raises_claim_lost_and_changes_nothing(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "rel-x", tasks={"running": Status.RUNNING})
        compozy_store.queue.release(claim)
        (again,) = compozy_store.queue.claim("w1", limit=1, lease=LEASE)
        compozy_store.tasks.upsert_state(
            _running_again(compozy_store.workflows.get_state("rel-x"), "running")
        )
        with pytest.raises(ClaimLost, match="rel-x"):
            compozy_store.queue.release(claim)
        summary = _summary(compozy_store, "rel-x")
        assert (summary.status, summary.worker_id, summary.claim_count) == (
            Status.RUNNING,
            "w1",
            again.claim_count,
        )
        assert _task_statuses(compozy_store, "rel-x") == {"running": Status.RUNNING}

    @pytest.mark.parametrize("operation", ["fence", "release", "abort"])
    @pytest.mark.parametrize(
        "how", ["missing", "terminal", "other-worker", "older-claim", "released"]
    )
    def test_every_way_of_losing_a_claim_raises_claim_lost_naming_the_execution(
        self, compozy_store: Store, how: str, operation: str
    ) -> None:
        claim = _claimed(compozy_store, "lost-exec", tasks={"running": Status.RUNNING})
        if how == "missing":
            claim = dataclasses.replace(claim, workflow_exec_id="gone-exec")
        elif how == "terminal":
            compozy_store.workflows.update_status("lost-exec", Status.SUCCESS)
        elif how == "other-worker":
            claim = dataclasses.replace(claim, worker_id="w2")
        elif how == "older-claim":
            compozy_store.queue.claim_execution("lost-exec", "w1", lease=LEASE)
        else:
            compozy_store.queue.release(claim)
        before = compozy_store.workflows.get_state("lost-exec")
        summary_before = _summary(compozy_store, "lost-exec")

        def fenced_write(tx: TransactionScope) -> None:
            tx.queue.fence(claim, exclusive=True)
            tx.workflows.update_status("lost-exec", Status.WAITING)

        with pytest.raises(ClaimLost, match=claim.workflow_exec_id):
            if operation == "fence":
                compozy_store.run_in_transaction(fenced_write)
            elif operation == "release":
                compozy_store.queue.release(claim)
            else:
                compozy_store.queue.abort(claim, Status.FAILED, {"message": "gave up"})
        assert compozy_store.workflows.get_state("lost-exec") == before
        assert _summary(compozy_store, "lost-exec") == summary_before

    # --- abort ----------------------------------------------------------------------------

    def test_abort_ends_the_execution_and_only_its_unfinished_tasks(
        self, compozy_store: Store
    ) -> None:
        unfinished = {
            "pending": Status.PENDING,
            "running": Status.RUNNING,
            "waiting": Status.WAITING,
            "paused": Status.PAUSED,
        }
        wf = _pending(compozy_store, "x", 0, tasks=unfinished)
        _pending(compozy_store, "other", 1, tasks={"elsewhere": Status.RUNNING})
        task(compozy_store, wf, task_id="done", status=Status.SUCCESS, output={"kept": 1})
        task(compozy_store, wf, task_id="failed", status=Status.FAILED, error={"message": "own"})
        claim, _ = compozy_store.queue.claim("w1", limit=2, lease=LEASE)
        error = {"message": "deadline passed", "code": "TIMEOUT"}
        compozy_store.queue.abort(claim, Status.TIMED_OUT, error)
        state = compozy_store.workflows.get_state("x")
        assert (state.status, state.error) == (Status.TIMED_OUT, error)
        for task_id in ("pending", "running", "waiting", "paused"):
            assert (state.tasks[task_id].status, state.tasks[task_id].error) == (
                Status.TIMED_OUT,
                error,
            )
        done, failed = state.tasks["done"], state.tasks["failed"]
        assert (done.status, done.error, done.output) == (Status.SUCCESS, None, {"kept": 1})
        assert (failed.status, failed.error) == (Status.FAILED, {"message": "own"})
        assert _task_statuses(compozy_store, "other") == {"elsewhere": Status.RUNNING}
        # Finished: the claim is lost, nobody can claim it, nobody can cancel it.
        assert compozy_store.queue.renew([claim], lease=LEASE).lost == frozenset({"x"})
        assert compozy_store.queue.claim("w2", limit=10, lease=LEASE) == []
        with pytest.raises(ExecutionFinished, match="x"):
            compozy_store.queue.request_cancel("x")

    def test_abort_needs_a_terminal_status_and_a_held_claim_and_changes_nothing_otherwise(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "abort-x", tasks={"running": Status.RUNNING})
        for not_terminal in (Status.RUNNING, Status.PENDING, Status.WAITING):
            with pytest.raises(ValidationError, match="status"):
                compozy_store.queue.abort(claim, not_terminal, {"message": "no"})
        compozy_store.queue.release(claim)
        with pytest.raises(ClaimLost, match="abort-x"):
            compozy_store.queue.abort(claim, Status.FAILED, {"message": "too late"})
        state = compozy_store.workflows.get_state("abort-x")
        assert (state.status, state.error) == (Status.PENDING, None)
        assert state.tasks["running"].status is Status.PENDING

    # --- request_cancel -------------------------------------------------------------------

    def test_request_cancel_of_an_unclaimed_pending_execution_cancels_it_at_once(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "x", 0, tasks={"queued": Status.PENDING})
        canceled = compozy_store.queue.request_cancel("x")
        assert canceled.status is Status.CANCELED
        assert canceled.error is not None
        assert canceled.error["code"] == "CANCELED"
        assert compozy_store.workflows.get_state("x") == canceled
        assert canceled.tasks["queued"].status is Status.CANCELED
        assert _summary(compozy_store, "x").cancel_requested_at is not None
        assert compozy_store.queue.claim("w1", limit=10, lease=LEASE) == []

    def test_request_cancel_of_a_claimed_execution_marks_it_for_its_worker(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "x", tasks={"running": Status.RUNNING})
        marked = compozy_store.queue.request_cancel("x")
        assert (marked.status, marked.error) == (Status.RUNNING, None)
        assert marked.tasks["running"].status is Status.RUNNING
        summary = _summary(compozy_store, "x")
        assert (summary.worker_id, summary.claim_count) == ("w1", 1)
        assert summary.cancel_requested_at is not None
        assert compozy_store.queue.renew([claim], lease=LEASE) == Renewal(
            frozenset(), frozenset({"x"})
        )
        with compozy_store.transaction() as tx:  # still the owner until it stops
            tx.queue.fence(claim)
        # A worker that claims it next is told at once.
        compozy_store.queue.release(claim)
        (again,) = compozy_store.queue.claim("w2", limit=1, lease=LEASE)
        assert (again.workflow_exec_id, again.cancel_requested) == ("x", True)

    @pytest.mark.parametrize("terminal", [Status.SUCCESS, Status.FAILED, Status.CANCELED])
    def test_request_cancel_of_a_terminal_execution_raises_execution_finished(
        self, compozy_store: Store, terminal: Status
    ) -> None:
        stored = workflow(
            compozy_store, workflow_exec_id="ended-exec", status=terminal, output={"o": 1}
        )
        with pytest.raises(ExecutionFinished, match="ended-exec") as finished:
            compozy_store.queue.request_cancel("ended-exec")
        assert isinstance(finished.value, ConflictError)
        assert compozy_store.workflows.get_state("ended-exec") == stored
        assert _summary(compozy_store, "ended-exec").cancel_requested_at is None

    def test_request_cancel_of_a_missing_execution_raises_workflow_not_found(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(WorkflowNotFound, match="ghost-exec"):
            compozy_store.queue.request_cancel("ghost-exec")

    def test_request_cancel_of_a_claimed_waiting_execution_marks_it(
        self, compozy_store: Store
    ) -> None:
        claim = _claimed(compozy_store, "x")
        with compozy_store.transaction() as tx:
            tx.queue.fence(claim, exclusive=True)
            tx.workflows.update_status("x", Status.WAITING)
        marked = compozy_store.queue.request_cancel("x")
        assert marked.status is Status.WAITING
        assert _summary(compozy_store, "x").cancel_requested_at is not None

    def test_request_cancel_again_keeps_the_first_request_time(self, compozy_store: Store) -> None:
        _claimed(compozy_store, "x")
        first = compozy_store.queue.request_cancel("x")
        requested = _summary(compozy_store, "x").cancel_requested_at
        assert requested is not None
        past(first.updated_at, requested)
        second = compozy_store.queue.request_cancel("x")
        summary = _summary(compozy_store, "x")
        assert summary.cancel_requested_at == requested
        assert (second.status, second.error) == (Status.RUNNING, None)
        assert first.updated_at is not None
        assert second.updated_at is not None
        assert second.updated_at > first.updated_at
        assert compozy_store.workflows.get_state("x") == second

    def test_request_cancel_of_an_unclaimed_execution_ends_it_and_its_tasks_with_canceled(
        self, compozy_store: Store
    ) -> None:
        wf = _pending(compozy_store, "x", 0, tasks={"queued": Status.PENDING})
        task(compozy_store, wf, task_id="done", status=Status.SUCCESS, output={"o": 1})
        before = compozy_store.workflows.get_state("x")
        past(before.updated_at, *(t.updated_at for t in before.tasks.values()))
        canceled = compozy_store.queue.request_cancel("x")
        assert canceled.error is not None
        assert canceled.error["code"] == "CANCELED"
        queued, done = canceled.tasks["queued"], canceled.tasks["done"]
        assert (queued.status, queued.error) == (Status.CANCELED, canceled.error)
        assert (done.status, done.error, done.output) == (Status.SUCCESS, None, {"o": 1})
        assert before.updated_at is not None
        assert canceled.updated_at is not None
        assert canceled.updated_at > before.updated_at
        before_queued = before.tasks["queued"].updated_at
        assert before_queued is not None
        assert queued.updated_at is not None
        assert queued.updated_at > before_queued
        assert done.updated_at == before.tasks["done"].updated_at
        summary = _summary(compozy_store, "x")
        assert (summary.status, summary.lease_expires_at) == (Status.CANCELED, None)
        assert summary.updated_at == canceled.updated_at
        assert compozy_store.workflows.get_state("x") == canceled

    # --- updated_at -----------------------------------------------------------------------

    def test_updated_at_moves_forward_on_claim_release_request_cancel_and_abort(
        self, compozy_store: Store
    ) -> None:
        _pending(compozy_store, "x", 0, tasks={"running": Status.RUNNING})

        def stamps() -> tuple[datetime, datetime]:
            state = compozy_store.workflows.get_state("x")
            assert state.updated_at is not None
            task_stamp = state.tasks["running"].updated_at
            assert task_stamp is not None
            assert _summary(compozy_store, "x").updated_at == state.updated_at
            return state.updated_at, task_stamp

        claims: list[Claim] = []
        steps: list[tuple[str, Callable[[], object], bool]] = [
            (
                "claim",
                lambda: claims.append(compozy_store.queue.claim_execution("x", "w1", lease=LEASE)),
                False,
            ),
            ("release", lambda: compozy_store.queue.release(claims[-1]), True),
            (
                "claim",
                lambda: claims.append(compozy_store.queue.claim("w1", limit=1, lease=LEASE)[0]),
                False,
            ),
            ("request_cancel", lambda: compozy_store.queue.request_cancel("x"), False),
            ("abort", lambda: compozy_store.queue.abort(claims[-1], Status.FAILED, {"m": 1}), True),
        ]
        previous = stamps()
        for name, step, moves_task in steps:
            past(*previous)
            step()
            current = stamps()
            assert current[0] > previous[0], name
            if moves_task:
                assert current[1] > previous[1], name
            else:
                assert current[1] == previous[1], name
            previous = current
        assert _task_statuses(compozy_store, "x") == {"running": Status.FAILED}


def _assert_claimed_exactly_once(
    store: Store, pool: list[str], taken: list[tuple[str, str, int]]
) -> None:
    """``taken`` (exec id, worker, claim_count) holds each of ``pool`` once, as the rows say."""
    times = Counter(exec_id for exec_id, _, _ in taken)
    twice = sorted(exec_id for exec_id, n in times.items() if n > 1)
    missed = sorted(set(pool) - set(times))
    strangers = sorted(set(times) - set(pool))
    assert (twice, missed, strangers) == ([], [], []), (
        f"claimed more than once: {twice}; never claimed: {missed}; not in the pool: {strangers}"
    )
    counts = Counter(count for _, _, count in taken)
    assert counts == {1: len(pool)}, f"claim counts (value: how many): {dict(counts)}"
    owners = {s.workflow_exec_id: s.worker_id for s in _all_summaries(store)}
    wrong = {e: (w, owners.get(e)) for e, w, _ in taken if owners.get(e) != w}
    assert wrong == {}, f"exec id: (the claim's worker, the stored worker_id): {wrong}"


def _all_summaries(store: Store) -> list[WorkflowSummary]:
    """Every execution, read page by page."""
    found: list[WorkflowSummary] = []
    cursor: str | None = None
    while True:
        page = store.workflows.list_page(limit=500, cursor=cursor)
        found.extend(page.items)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _task_of(tx: TransactionScope, exec_id: str, task_id: str) -> TaskState:
    """A new RUNNING task of the execution, built inside the transaction ``tx``."""
    state = tx.workflows.get_state(exec_id)
    return TaskState(
        task_id=task_id,
        workflow_id=state.workflow_id,
        workflow_exec_id=exec_id,
        component=Component.TASK,
        execution_type=ExecutionType.BASIC,
        status=Status.RUNNING,
    )


def _running_again(state: WorkflowState, task_id: str) -> TaskState:
    """The task's latest state, RUNNING again (as the new owner resumes it)."""
    current = state.tasks[task_id]
    current.status = Status.RUNNING
    return current

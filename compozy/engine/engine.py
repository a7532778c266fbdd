"""The engine: a worker that claims executions from the database and runs them.

The database is the queue. ``start`` stores an execution PENDING; any engine serving the same
database (this one, another process, another machine) claims it, runs it under a lease that a
background thread renews, and fences every write with its claim. An execution whose worker
stopped renewing is claimed by another worker when the lease expires, and resumed (or failed,
with ``recovery="fail"``). ``run`` executes one execution in the calling thread, claimed by
this engine from the moment it is stored. See docs/deployment.md.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from compozy.core import Status, new_id
from compozy.core.closing import ClosedOnExit
from compozy.engine.definitions import LOGGER_NAME, WorkflowDefinition
from compozy.engine.executor import CANCEL, RunStopped, TaskCallback, WorkflowRun
from compozy.engine.loading import WorkflowCatalog
from compozy.engine.templates import Templates
from compozy.engine.wakeups import DONE_CHANNEL, QUEUE_CHANNEL, Changes, Watcher, announce
from compozy.errors import ClaimLost, CompozyError, NotFoundError, StoreUnavailable
from compozy.workflow import Claim, WorkflowState

if TYPE_CHECKING:
    from compozy.store import Store, TransactionScope

__all__ = ["Engine", "UnknownWorkflow"]

Recovery = Literal["resume", "fail"]

# How often `wait` re-reads an execution when nothing can tell it of a change (no watcher).
_POLL_SECONDS = 0.05
_RELEASED = "released"
_LOST = "lost"
_log = logging.getLogger(LOGGER_NAME)


class UnknownWorkflow(NotFoundError):
    """No workflow definition has the requested id."""


def default_worker_id() -> str:
    """``host:pid:random``: unique per process, and says where to look."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


@dataclass
class _Active:
    """An execution this engine holds a claim on."""

    run: WorkflowRun
    done: threading.Event = field(default_factory=threading.Event)
    background: bool = True  # claimed by the worker loop (not by `run` in a caller's thread)


class Engine(ClosedOnExit):
    """Runs workflow definitions against a Store, as one worker among any number.

    ``start`` stores a PENDING execution and makes this engine serve: a background thread
    claims up to ``max_concurrent_workflows`` executions of the workflows it knows, renews
    their leases every ``poll_interval`` seconds and notices cancel requests. ``run``
    executes in the calling thread. Parallel and collection children run on a small pool per
    container, at most ``max_parallel_tasks`` at once each.
    """

    def __init__(
        self,
        store: Store,
        definitions: Mapping[str, WorkflowDefinition] | WorkflowCatalog,
        *,
        max_concurrent_workflows: int = 4,
        max_parallel_tasks: int = 8,
        worker_id: str | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        recovery: Recovery = "resume",
    ) -> None:
        if max_concurrent_workflows < 1:
            raise CompozyError(
                f"max_concurrent_workflows is {max_concurrent_workflows}; it must be at least 1"
            )
        if max_parallel_tasks < 1:
            raise CompozyError(f"max_parallel_tasks is {max_parallel_tasks}; it must be >= 1")
        if not (lease > 0 and 0 < poll_interval * 2 <= lease):
            raise CompozyError(
                f"lease {lease:g}s and poll_interval {poll_interval:g}s: the lease must be "
                "positive and at least twice the poll interval"
            )
        self._store = store
        # A catalog is looked at again by the worker loop (new and changed files); a mapping
        # is fixed for the engine's life.
        self._catalog = definitions if isinstance(definitions, WorkflowCatalog) else None
        self._fixed: Mapping[str, WorkflowDefinition] = MappingProxyType(
            {} if isinstance(definitions, WorkflowCatalog) else dict(definitions)
        )
        self._capacity = max_concurrent_workflows
        self._max_parallel_tasks = max_parallel_tasks
        self.worker_id = worker_id or default_worker_id()
        self._lease = lease
        self._poll = poll_interval
        self._recovery: Recovery = recovery
        self._templates = Templates()
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._started: set[str] = set()  # by `start`, not finished here yet: `close` waits
        self._closed = False
        self._serving = False  # claiming new work
        self._wake = threading.Event()
        self._renewed = -math.inf  # monotonic time of the last lease renewal round
        self._changes = Changes()
        self._watcher = Watcher(
            store,
            on_queue=self._wake.set,
            on_done=self._changes.changed,
            on_some_done=self._some_done,
            retry=poll_interval,
        )
        self._halt = threading.Event()
        self._loop: threading.Thread | None = None
        self._claiming = threading.Lock()  # held by a claim round; shutdown waits for it
        self._loop_problem: str | None = None  # the worker loop's last error, said once
        self._catalog_problem: str | None = None  # the last failure to read workflow files

    @property
    def definitions(self) -> Mapping[str, WorkflowDefinition]:
        """The workflow definitions by id (read-only; with a catalog, the current ones)."""
        return self._fixed if self._catalog is None else self._catalog.definitions

    @property
    def store(self) -> Store:
        """The store executions are written to."""
        return self._store

    def definition(self, workflow_id: str) -> WorkflowDefinition:
        """The definition with this id, or ``UnknownWorkflow`` listing the known ids."""
        found = self.definitions.get(workflow_id)
        if found is None and self._catalog is not None:
            self._catalog.refresh(max_age=0.25)  # a file added a moment ago
            found = self.definitions.get(workflow_id)
            problem = self._catalog.unavailable(workflow_id) if found is None else None
            if problem is not None:
                raise UnknownWorkflow(
                    f"workflow {workflow_id!r} is unavailable: its file does not load "
                    f"({problem}); fix the file (a running worker loads it again within "
                    f"{self._catalog.interval:g}s)"
                )
        if found is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise UnknownWorkflow(f"no workflow definition with id {workflow_id!r}; known: {known}")
        return found

    # --- starting and running ----------------------------------------------------------------

    def start(self, workflow_id: str, input: dict[str, Any] | None = None) -> str:
        """Store a PENDING execution and return its ``workflow_exec_id``; this engine serves
        from now on, so it (or any other worker on the database) runs it."""
        definition = self.definition(workflow_id)
        value = definition.validate_input(input)
        with self._lock:
            self._check_open()
        state = WorkflowState(workflow_id=definition.id, status=Status.PENDING, input=value)
        exec_id = self._store.workflows.upsert_state(state).workflow_exec_id
        with self._lock:
            self._started.add(exec_id)
        self.serve()  # wakes this engine's worker loop at once
        announce(self._store, QUEUE_CHANNEL)  # and, on PostgreSQL, those of other processes
        return exec_id

    def serve(self) -> None:
        """Claim and run executions in the background until ``close`` or ``shutdown``."""
        with self._lock:
            self._check_open()
            self._serving = True
            self._ensure_loop()
            self._watcher.start(f"compozy-wakeups-{self.worker_id}")
        self._wake.set()

    def run(
        self,
        workflow_id: str,
        input: dict[str, Any] | None = None,
        *,
        on_task: TaskCallback | None = None,
    ) -> WorkflowState:
        """Store an execution claimed by this engine and execute it in the calling thread;
        return the final state with its tasks.

        ``on_task`` gets every stored task state change, one call at a time (calls may come
        from several threads when tasks run in parallel).
        """
        exec_id = self.submit(workflow_id, input)
        self.execute(exec_id, on_task=on_task)
        return self._store.workflows.get_state(exec_id)

    def submit(self, workflow_id: str, input: dict[str, Any] | None = None) -> str:
        """Store an execution already claimed by this engine (no other worker takes it while
        this engine renews the lease); run it with ``execute``."""
        definition = self.definition(workflow_id)
        value = definition.validate_input(input)
        with self._lock:
            self._check_open()
            self._ensure_loop()
        state = WorkflowState(workflow_id=definition.id, status=Status.PENDING, input=value)

        def store_claimed(tx: TransactionScope) -> tuple[WorkflowState, Claim]:
            stored = tx.workflows.upsert_state(state)
            claim = tx.queue.claim_execution(
                stored.workflow_exec_id, self.worker_id, lease=self._lease
            )
            return stored, claim

        stored, claim = self._store.run_in_transaction(store_claimed)
        self._hold(stored, claim, background=False)
        return stored.workflow_exec_id

    def execute(self, workflow_exec_id: str, *, on_task: TaskCallback | None = None) -> None:
        """Run an execution this engine claimed with ``submit``, in the calling thread."""
        with self._lock:
            active = self._active.get(workflow_exec_id)
        if active is None or active.background:
            raise CompozyError(
                f"workflow execution {workflow_exec_id} was not submitted to this engine"
            )
        self._execute(active, on_task)

    def cancel(self, workflow_exec_id: str, *, wait: float = 0.0) -> WorkflowState:
        """Cancel an execution: at once when PENDING; when running (here or on any worker),
        its worker starts no new task and ends it CANCELED within about a second.
        ``ExecutionFinished`` once it is terminal.

        When this engine runs it and ``wait`` is given, wait that long for the run to stop at
        its next task; past that (a tool still running), end it CANCELED now: the tool's
        result is then discarded.
        """
        state = self._store.queue.request_cancel(workflow_exec_id)
        with self._lock:
            active = self._active.get(workflow_exec_id)
        if active is None:
            return state
        active.run.stop(CANCEL)
        if wait > 0 and not active.done.wait(wait):
            self._end(active.run.claim, Status.CANCELED, "CANCELED", "canceled by request")
            self._let_go(active)  # the execution is terminal: its thread's next write fails
        return self._store.workflows.get_state(workflow_exec_id)

    def wait(self, workflow_exec_id: str, timeout: float | None = None) -> WorkflowState:
        """The execution once terminal; ``TimeoutError`` if it is not terminal in time.

        Woken when this engine's run of it ends, and when another process's does (a
        notification on PostgreSQL, a change of a SQLite file), with a re-read every
        ``poll_interval`` in case a signal was missed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = threading.Event()
        unsubscribe = self.watch(workflow_exec_id, changed.set)
        with self._lock:
            fallback = self._poll if self._watcher.running else _POLL_SECONDS
        try:
            while True:
                state = self._store.workflows.get_state(workflow_exec_id)
                if state.status.is_terminal:
                    return state
                left = math.inf if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"workflow execution {workflow_exec_id} is still "
                        f"{state.status.value} after {timeout}s"
                    )
                changed.wait(min(fallback, left))
                changed.clear()
        finally:
            unsubscribe()

    def watch(self, workflow_exec_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (from another thread) whenever the execution may have changed
        state: its run here ended, or another process says one ended; read it to know. Some
        signals can be missed (a dropped connection): re-read now and then. Returns the
        function that stops the calls."""
        with self._lock:
            if not self._closed:
                self._watcher.start(f"compozy-wakeups-{self.worker_id}")
        return self._changes.watch(workflow_exec_id, callback)

    @property
    def running(self) -> list[str]:
        """The executions this engine holds claims on."""
        with self._lock:
            return sorted(self._active)

    def _check_open(self) -> None:
        if self._closed:
            raise CompozyError("the engine is closed; create a new Engine to run workflows")

    # --- the worker loop ---------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        """Start the background thread (called under the lock)."""
        if self._loop is None:
            self._loop = threading.Thread(
                target=self._work, name=f"compozy-worker-{self.worker_id}", daemon=True
            )
            self._loop.start()

    def _work(self) -> None:
        while not self._halt.is_set():
            # Cleared before the round, so a wake-up that comes during it starts the next one.
            self._wake.clear()
            try:
                self._refresh_catalog()
                if time.monotonic() - self._renewed >= self._poll:  # not at every wake-up
                    self._renew()
                self._claim()
            except CompozyError as exc:  # the database may be down for a while: keep trying
                self._loop_failed(str(exc))
            else:
                if self._loop_problem is not None:
                    self._loop_problem = None
                    _log.warning("Worker %s: the database answers again", self.worker_id)
            self._wake.wait(max(0.0, self._renewed + self._poll - time.monotonic()))

    def _some_done(self) -> None:
        """Another process ended executions it did not name (SQLite): tell the waiters of
        every execution not run here (those run here are told when they end)."""
        self._changes.changed_except(self._runs_here)

    def _runs_here(self, workflow_exec_id: str) -> bool:
        with self._lock:
            return workflow_exec_id in self._active

    def _refresh_catalog(self) -> None:
        """Read changed workflow files (at most every catalog.interval seconds). A file that
        does not load is the catalog's to report; anything else is said once and the loaded
        workflows keep running."""
        if self._catalog is None:
            return
        try:
            self._catalog.refresh()
        except Exception as exc:  # noqa: BLE001 - reading files must never stop the worker
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._catalog_problem:
                self._catalog_problem = problem
                _log.warning(
                    "Worker %s: reading the workflow files failed (%s); the workflows already "
                    "loaded keep running",
                    self.worker_id,
                    problem,
                )
        else:
            self._catalog_problem = None

    def _loop_failed(self, problem: str) -> None:
        """Say a problem of the worker loop once, not at every poll while it lasts."""
        if problem != self._loop_problem:
            _log.warning("Worker %s: %s (retrying every %gs)", self.worker_id, problem, self._poll)
        self._loop_problem = problem

    def _renew(self) -> None:
        self._renewed = time.monotonic()
        with self._lock:
            claims = [active.run.claim for active in self._active.values()]
        if not claims:
            return
        renewal = self._store.queue.renew(claims, lease=self._lease)
        with self._lock:
            for exec_id in renewal.lost:
                if exec_id in self._active:
                    self._active[exec_id].run.stop(_LOST)
            for exec_id in renewal.cancel_requested:
                if exec_id in self._active:
                    self._active[exec_id].run.stop(CANCEL)

    def _claim(self) -> None:
        with self._claiming:
            with self._lock:
                if not self._serving or self._closed:
                    return
                free = self._capacity - sum(a.background for a in self._active.values())
            if free < 1:
                return
            claims = self._store.queue.claim(
                self.worker_id, limit=free, lease=self._lease, workflow_ids=list(self.definitions)
            )
            for claim in claims:
                self._start_claimed(claim)

    def _start_claimed(self, claim: Claim) -> None:
        exec_id = claim.workflow_exec_id
        try:
            if claim.cancel_requested:
                self._end(claim, Status.CANCELED, "CANCELED", "canceled by request")
                return
            if claim.previous_worker is not None and self._recovery == "fail":
                self._end(
                    claim,
                    Status.FAILED,
                    "INTERRUPTED",
                    f"execution was interrupted: worker {claim.previous_worker} stopped "
                    "renewing its lease (runtime.recovery is fail); start it again",
                )
                return
            if claim.previous_worker is not None:
                _log.warning(
                    "Resuming execution %s: worker %s held it and stopped renewing its lease "
                    "(its process likely stopped); its finished tasks are kept, the unfinished "
                    "ones run again",
                    exec_id,
                    claim.previous_worker,
                )
            state = self._store.workflows.get_state(exec_id)
            if state.workflow_id not in self.definitions:  # its file went away since the claim
                self._store.queue.release(claim)
                return
        except ClaimLost:
            return
        active = self._hold(state, claim, background=True)
        threading.Thread(
            target=self._execute,
            args=(active, None),
            name=f"compozy-workflow-{exec_id}",
            daemon=True,  # a tool still running after shutdown must not keep the process alive
        ).start()

    def _hold(self, state: WorkflowState, claim: Claim, *, background: bool) -> _Active:
        run = WorkflowRun(
            self._store,
            self.definition(state.workflow_id),
            state,
            claim,
            self._templates,
            max_parallel_tasks=self._max_parallel_tasks,
        )
        active = _Active(run, background=background)
        with self._lock:
            self._active[state.workflow_exec_id] = active
        return active

    def _execute(self, active: _Active, on_task: TaskCallback | None) -> None:
        """Run to a terminal state, or stop; an unexpected error marks it ENGINE_ERROR."""
        run = active.run
        claim = run.claim
        exec_id = claim.workflow_exec_id
        run.set_callbacks(on_task, self._callback_failed(exec_id))
        try:
            run.execute()
        except RunStopped as stopped:
            if stopped.reason == CANCEL:
                self._end(claim, Status.CANCELED, "CANCELED", "canceled by request")
            elif stopped.reason == _LOST:
                _log.warning("Execution %s is held by another worker now; stopped here", exec_id)
        except ClaimLost as lost:
            _log.warning("Stopped execution %s: %s", exec_id, lost)
        except StoreUnavailable as exc:  # busy past its timeout, or gone: not an engine bug
            _log.error(
                "Execution %s of workflow %s stopped: the database could not store its "
                "progress: %s",
                exec_id,
                run.workflow_id,
                exc,
            )
            self._end(
                claim,
                Status.FAILED,
                "DATABASE_UNAVAILABLE",
                f"the database could not store this execution's progress: {exc}",
            )
        except Exception as exc:  # noqa: BLE001 - never leave an execution RUNNING
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            _log.error(
                "Execution %s of workflow %s failed in the engine (%s); it is marked FAILED "
                "with code ENGINE_ERROR",
                exec_id,
                run.workflow_id,
                cause,
                exc_info=exc,
            )
            self._end(
                claim,
                Status.FAILED,
                "ENGINE_ERROR",
                f"the engine failed while running this execution: {cause}",
            )
        finally:
            with self._lock:
                self._active.pop(exec_id, None)
                self._started.discard(exec_id)
            active.done.set()
            self._wake.set()  # a slot is free: claim the next one now
            self._changes.changed(exec_id)
            announce(self._store, DONE_CHANNEL, exec_id)  # waiters in other processes

    def _callback_failed(self, exec_id: str) -> Callable[[BaseException], None]:
        def report(exc: BaseException) -> None:
            _log.warning(
                "The on_task callback of execution %s raised %r; the run goes on.", exec_id, exc
            )

        return report

    def _end(self, claim: Claim, status: Status, code: str, message: str) -> None:
        """The claimed execution and its unfinished tasks end ``status``."""
        try:
            self._store.run_in_transaction(
                lambda tx: tx.queue.abort(claim, status, {"message": message, "code": code})
            )
        except ClaimLost:
            pass  # another worker holds it now, or it finished: nothing of ours to end
        except CompozyError as exc:  # the store itself may be what failed; the lease expires
            _log.error(
                "Could not mark execution %s %s (%s); another worker resumes it once its lease "
                "expires",
                claim.workflow_exec_id,
                status.value,
                exc,
            )

    def _let_go(self, active: _Active) -> None:
        """Stop counting a run whose thread may still be in a tool: nothing waits for it, and
        its next write fails (``ClaimLost``), which ends it quietly."""
        exec_id = active.run.claim.workflow_exec_id
        with self._lock:
            self._active.pop(exec_id, None)
        active.done.set()
        self._changes.changed(exec_id)

    # --- shutdown ----------------------------------------------------------------------------

    def shutdown(self, grace: float) -> list[str]:
        """Stop claiming, give running executions ``grace`` seconds to finish, then release
        the rest (PENDING again, resumed by another worker at once) and stop the worker.
        Returns the released executions."""
        with self._lock:
            self._closed = True
            self._serving = False
        # A claim round under way ends first, so what it took is among the active runs.
        with self._claiming, self._lock:
            waiting = list(self._active.values())
        deadline = time.monotonic() + grace if math.isfinite(grace) else math.inf
        for active in waiting:
            left = deadline - time.monotonic()
            active.done.wait(None if left == math.inf else max(left, 0))
        released = []
        with self._lock:
            left_over = [a for a in self._active.values() if not a.done.is_set()]
        for active in left_over:
            active.run.stop(_RELEASED)
            exec_id = active.run.claim.workflow_exec_id
            try:
                self._store.queue.release(active.run.claim)
                released.append(exec_id)
                self._let_go(active)  # the claim is gone: its thread's next write fails
            except ClaimLost:
                pass  # it finished (or was taken over) in the meantime
            except CompozyError:
                _log.exception(
                    "Could not release execution %s; its lease expires in %gs", exec_id, self._lease
                )
        self._halt.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join()
        self._watcher.stop()
        return sorted(released)

    def close(self, wait: bool = True) -> None:
        """Finish the executions this engine started and is running, then stop the worker.

        ``wait=False`` stops claiming and releases the running executions at once, for
        another worker to resume; executions it started and nobody claimed stay PENDING.
        """
        with self._lock:
            drain = sorted(self._started) if wait and not self._closed else []
        for exec_id in drain:
            self.wait(exec_id)  # still serving, so this engine runs them if nobody else does
        self.shutdown(math.inf if wait else 0.0)

    def __repr__(self) -> str:
        return f"<Engine {self.worker_id}: {len(self.definitions)} workflow(s) on {self._store!r}>"

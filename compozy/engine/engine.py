"""The engine: starts executions in a bounded pool, waits for them, recovers dead ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from compozy.core import Status, new_id
from compozy.engine.definitions import LOGGER_NAME, WorkflowDefinition
from compozy.engine.executor import TaskCallback, WorkflowRun, fail_execution
from compozy.engine.templates import Templates
from compozy.errors import CompozyError, NotFoundError
from compozy.workflow import WorkflowFilter, WorkflowState

if TYPE_CHECKING:
    from compozy.store import Store

__all__ = ["Engine", "UnknownWorkflow"]

# How often `wait` re-reads an execution that another engine or process is running.
_POLL_SECONDS = 0.05


class UnknownWorkflow(NotFoundError):
    """No workflow definition has the requested id."""


class Engine:
    """Runs workflow definitions against a Store; one per process is enough.

    ``start`` stores the execution and queues it on a pool of ``max_concurrent_workflows``
    threads; ``run`` executes in the calling thread. Parallel and collection children run on
    a small pool per container, at most ``max_parallel_tasks`` at once each.
    """

    def __init__(
        self,
        store: Store,
        definitions: Mapping[str, WorkflowDefinition],
        *,
        max_concurrent_workflows: int = 4,
        max_parallel_tasks: int = 8,
    ) -> None:
        if max_concurrent_workflows < 1:
            raise CompozyError(
                f"max_concurrent_workflows is {max_concurrent_workflows}; it must be at least 1"
            )
        if max_parallel_tasks < 1:
            raise CompozyError(f"max_parallel_tasks is {max_parallel_tasks}; it must be >= 1")
        self._store = store
        self._definitions: Mapping[str, WorkflowDefinition] = MappingProxyType(dict(definitions))
        self._max_parallel_tasks = max_parallel_tasks
        self._templates = Templates()
        self._pool = ThreadPoolExecutor(
            max_concurrent_workflows, thread_name_prefix="compozy-workflow"
        )
        self._lock = threading.Lock()
        self._closed = False
        # Executions this engine has queued or is running: recover_interrupted leaves them be.
        self._active: set[str] = set()
        self._futures: dict[str, Future[None]] = {}

    @property
    def definitions(self) -> Mapping[str, WorkflowDefinition]:
        """The workflow definitions by id (read-only)."""
        return self._definitions

    @property
    def store(self) -> Store:
        """The store executions are written to."""
        return self._store

    def definition(self, workflow_id: str) -> WorkflowDefinition:
        """The definition with this id, or ``UnknownWorkflow`` listing the known ids."""
        found = self._definitions.get(workflow_id)
        if found is None:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise UnknownWorkflow(f"no workflow definition with id {workflow_id!r}; known: {known}")
        return found

    # --- starting and running ----------------------------------------------------------------

    def start(self, workflow_id: str, input: dict[str, Any] | None = None) -> str:
        """Store a PENDING execution, queue it, and return its ``workflow_exec_id``."""
        definition = self.definition(workflow_id)
        with self._lock:
            self._check_open()
            state = self._create(definition, input)
            exec_id = state.workflow_exec_id
            future = self._pool.submit(self._execute, definition, state, None)
            self._futures[exec_id] = future
        future.add_done_callback(lambda _f: self._forget(exec_id))
        return exec_id

    def run(
        self,
        workflow_id: str,
        input: dict[str, Any] | None = None,
        *,
        on_task: TaskCallback | None = None,
    ) -> WorkflowState:
        """Execute in the calling thread; return the final state with its tasks.

        ``on_task`` gets every stored task state change, one call at a time (calls may come
        from several threads when tasks run in parallel).
        """
        definition = self.definition(workflow_id)
        with self._lock:
            self._check_open()
            state = self._create(definition, input)
        exec_id = state.workflow_exec_id
        try:
            self._execute(definition, state, on_task)
        finally:
            self._forget(exec_id)
        return self._store.workflows.get_state(exec_id)

    def wait(self, workflow_exec_id: str, timeout: float | None = None) -> WorkflowState:
        """The execution once terminal; ``TimeoutError`` if it is not terminal in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            future = self._futures.get(workflow_exec_id)
        if future is not None:
            try:
                future.result(timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"workflow execution {workflow_exec_id} is still running after {timeout}s"
                ) from None
            except CancelledError:
                pass  # cancelled by close(wait=False), which stored it CANCELED
        # Not (or no longer) ours: poll, since another engine or process may be running it.
        while True:
            state = self._store.workflows.get_state(workflow_exec_id)
            if state.status.is_terminal:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"workflow execution {workflow_exec_id} is still {state.status.value} "
                    f"after {timeout}s"
                )
            time.sleep(_POLL_SECONDS)

    def _check_open(self) -> None:
        if self._closed:
            raise CompozyError("the engine is closed; create a new Engine to run workflows")

    def _create(self, definition: WorkflowDefinition, input: Any) -> WorkflowState:
        """Validate the input, then store the execution PENDING (called under the lock)."""
        value = definition.validate_input(input)
        exec_id = new_id()
        # Marked active before it is stored, so a concurrent recover never sees it as orphaned.
        self._active.add(exec_id)
        try:
            state = WorkflowState(
                workflow_exec_id=exec_id,
                workflow_id=definition.id,
                status=Status.PENDING,
                input=value,
            )
            return self._store.workflows.upsert_state(state)
        except BaseException:
            self._active.discard(exec_id)
            raise

    def _forget(self, exec_id: str) -> None:
        with self._lock:
            self._active.discard(exec_id)
            self._futures.pop(exec_id, None)

    def _execute(
        self, definition: WorkflowDefinition, state: WorkflowState, on_task: TaskCallback | None
    ) -> None:
        """Run to a terminal state; an unexpected error marks the execution ENGINE_ERROR."""
        log = logging.getLogger(LOGGER_NAME)
        exec_id = state.workflow_exec_id
        run = WorkflowRun(
            self._store,
            definition,
            state,
            self._templates,
            max_parallel_tasks=self._max_parallel_tasks,
            on_task=on_task,
            on_callback_error=lambda exc: log.warning(
                "The on_task callback of execution %s raised %r; the run goes on.", exec_id, exc
            ),
        )
        try:
            run.execute()
        except Exception as exc:  # never leave an execution RUNNING, whatever went wrong
            log.exception(
                "Execution %s of workflow %s failed in the engine", exec_id, definition.id
            )
            try:
                fail_execution(
                    self._store,
                    exec_id,
                    "ENGINE_ERROR",
                    f"the engine failed while running this execution: {exc}",
                )
            except Exception:  # the store itself may be what failed
                log.exception(
                    "Could not mark execution %s FAILED; the next recover_interrupted() of a "
                    "new process will.",
                    exec_id,
                )

    # --- recovery and shutdown ---------------------------------------------------------------

    def recover_interrupted(self) -> list[str]:
        """Mark FAILED (code INTERRUPTED) the RUNNING/PENDING executions no live engine runs.

        Call it once when a long-lived process starts, before it starts new work: it assumes
        that every stored running execution this engine did not start belongs to a process that
        died, so two processes sharing one database must not both call it while running.
        """
        candidates = [
            state
            for status in (Status.RUNNING, Status.PENDING)
            for state in self._store.workflows.list_states(WorkflowFilter(status=status))
        ]
        recovered: list[str] = []
        for state in sorted(candidates, key=lambda s: s.workflow_exec_id):
            exec_id = state.workflow_exec_id
            with self._lock:
                if exec_id in self._active:
                    continue
            message = (
                f"execution was interrupted: it was {state.status.value} when the process "
                "running it stopped; start it again"
            )
            if fail_execution(self._store, exec_id, "INTERRUPTED", message):
                recovered.append(exec_id)
        if recovered:
            logging.getLogger(LOGGER_NAME).warning(
                "Marked %d interrupted execution(s) FAILED (code INTERRUPTED): %s",
                len(recovered),
                ", ".join(recovered),
            )
        return recovered

    def close(self, wait: bool = True) -> None:
        """Stop taking work; ``wait=False`` also cancels queued executions (marked CANCELED)."""
        with self._lock:
            self._closed = True
            queued = dict(self._futures)
        if wait:
            # Also after an earlier close(wait=False): this is how a caller joins the threads.
            self._pool.shutdown(wait=True)
            return
        for exec_id, future in queued.items():
            if future.cancel():
                self._cancel_queued(exec_id)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _cancel_queued(self, exec_id: str) -> None:
        try:
            state = self._store.workflows.get_state(exec_id)
            if state.status is Status.PENDING:
                state.status = Status.CANCELED
                state.error = {
                    "message": "the engine was closed before this execution started",
                    "code": "CANCELED",
                }
                self._store.workflows.upsert_state(state)
        except CompozyError:
            logging.getLogger(LOGGER_NAME).exception("Could not cancel execution %s", exec_id)
        finally:
            self._forget(exec_id)

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Engine {len(self._definitions)} workflow(s) on {self._store!r}>"

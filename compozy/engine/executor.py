"""Runs one claimed workflow execution: every task state change goes through the repositories.

A task is stored PENDING, then RUNNING, then SUCCESS (with its output) or FAILED (with a
``{"message", "code"}`` error). Children carry their parent's ``task_exec_id``. Sequential
containers (the workflow itself, composite) store a child only when it starts, so the tasks
after a failure never appear; fan-out containers (parallel, collection) store all their
children PENDING first (in one transaction), so progress counts are right from the start, and
mark the children that a ``fail_fast`` failure kept from starting CANCELED.

Writes are group-committed: a task queues its state changes and goes on; one writer thread
per run stores whatever is queued, in order, in one transaction fenced by the run's claim
(``store.queue.fence``), retried on transient conflicts by ``Store.run_in_transaction``. A
tool call is never inside it. What is committed is therefore always a prefix of the run's
history, as if the run had stopped a moment earlier. Without an ``on_task`` callback, the
changes of one task that are queued together are stored as the last of them: a RUNNING that
the SUCCESS replaces before it could be written was never visible to anyone, while a tool that
takes longer than one write is seen RUNNING. With ``on_task``, every change is stored and then
reported, in order, once committed. The workflow completes only after every queued change is
stored.

A run that finds its claim gone (``ClaimLost``, raised by its next write or at its next task
once the writer met it) or is asked to stop starts no new task and ends quietly; what was
queued before is stored if the claim still holds, and nothing is stored after it is lost.

Resuming: tasks the execution already finished (under an earlier claim) are not run again; the
outputs of the SUCCESS ones feed later templates. Unfinished tasks run again on their stored
rows, so a tool runs at least once, not exactly once (a task whose end was queued but not yet
committed when its worker died runs again too).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from compozy.core import Component, Status
from compozy.core.values import check_json_object, utc_now
from compozy.engine.definitions import LOGGER_NAME, TaskDefinition, WorkflowDefinition, route_key
from compozy.engine.templates import FinishedTasks, TemplateFailure, Templates
from compozy.engine.tools import resolve_tool, tool_outcome
from compozy.errors import ValidationError
from compozy.task import TaskFilter, TaskState
from compozy.usage import UsageSummary
from compozy.workflow import Claim, OutputTransformer, WorkflowState

if TYPE_CHECKING:
    from compozy.store import Store, TransactionScope

__all__ = ["ERROR_CODES", "RunStopped", "TaskCallback", "WorkflowRun"]

R = TypeVar("R")

TaskCallback = Callable[[TaskState], None]

ERROR_CODES = (
    "TOOL_FAILED",
    "TEMPLATE_FAILED",
    "CHILD_FAILED",
    "NO_ROUTE",
    "TIMED_OUT",
    "CANCELED",
    "TASK_FAILED",
    "INTERRUPTED",
    "DATABASE_UNAVAILABLE",
    "ENGINE_ERROR",
)
"""Every ``error.code`` the engine writes (besides the store's OUTPUT_TRANSFORMATION_FAILED)."""

_UNSET: Any = object()
# A task waiting for its tool looks this often whether a fail_fast sibling failed.
_CANCEL_POLL = 0.05
# What a retry policy tries again: a failing tool and an attempt that ran out of time.
_RETRIED = frozenset({"TOOL_FAILED", "TIMED_OUT"})
_log = logging.getLogger(LOGGER_NAME)
_TICK = timedelta(microseconds=1)


class RunStopped(Exception):
    """Ends a run early without finishing it: canceled, released, or its claim was lost."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CANCEL = "cancel"
"""The stop reason of a run whose cancellation was requested."""


class TaskFailure(Exception):
    """Ends the current task ``status`` (FAILED, TIMED_OUT, CANCELED) with this error."""

    def __init__(
        self, code: str, message: str, status: Status = Status.FAILED, attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.attempts = attempts

    def error(self) -> dict[str, Any]:
        """The error object stored on the task (``attempts`` when it was tried more than once)."""
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.attempts > 1:
            error["attempts"] = self.attempts
        return error


class _Cancel:
    """Set once by a fail_fast fan-out whose child failed; its other children end CANCELED."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()

    def set(self, reason: str) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason = reason
                self.event.set()


@dataclass(frozen=True, eq=False)
class _Limit:
    """What can end the tasks under ``owner`` early: its timeout (a deadline on the monotonic
    clock) or, for a fail_fast fan-out's children, its ``cancel``."""

    owner: str  # the task_id, for messages
    owner_exec_id: str
    timeout: float | None = None
    deadline: float = math.inf
    cancel: _Cancel | None = None

    def reason(self, now: float) -> str | None:
        """Why it stops the tasks under it now, or None."""
        if now >= self.deadline:
            return f"task {self.owner!r} did not finish within its timeout of {self.timeout:g}s"
        if self.cancel is not None and self.cancel.event.is_set():
            return self.cancel.reason
        return None


@dataclass(frozen=True)
class _Scope:
    """What depends on where a task runs: ``item``/``index`` in a collection, and the limits
    (timeouts, fail_fast) of the containers around it, outermost first."""

    item: Any = _UNSET
    index: int | None = None
    limits: tuple[_Limit, ...] = ()

    def limited(self, limit: _Limit | None) -> _Scope:
        return self if limit is None else replace(self, limits=(*self.limits, limit))


@dataclass
class _Outcome:
    output: dict[str, Any]
    usage: UsageSummary | None = None


@dataclass
class _Change:
    """A queued task state change: a snapshot of the state, and usage to merge once stored."""

    state: TaskState
    usages: list[UsageSummary]


class _Writes:
    """Group commit of one run's task state changes (see the module docstring).

    ``submit`` queues snapshots and returns at once; a writer thread stores everything queued
    in one fenced transaction, then hands the stored states to ``notify`` in order. The first
    failure of a write is kept: it is raised by every later ``submit``, ``check`` and
    ``flush``, and nothing more is written."""

    def __init__(
        self,
        store: Store,
        claim: Claim,
        notify: Callable[[TaskState], None],
        coalesce: Callable[[], bool],
    ) -> None:
        self._store = store
        self._claim = claim
        self._notify = notify
        self._coalesce = coalesce
        self._changed = threading.Condition()
        self._queue: list[_Change] = []
        self._submitted = 0
        self._written = 0
        self._failure: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"compozy-writes-{self._claim.workflow_exec_id}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Store what is queued (unless a write failed), then stop the writer thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def submit(self, states: list[TaskState], usage: UsageSummary | None = None) -> None:
        with self._changed:
            self._raise_failure()
            usages = [] if usage is None else [usage]
            self._queue.extend(_Change(copy.copy(state), usages) for state in states)
            self._submitted += len(states)
            self._changed.notify_all()

    def check(self) -> None:
        """Raise the failure of an earlier write, if one failed."""
        with self._changed:
            self._raise_failure()

    def flush(self) -> None:
        """Wait until every change submitted so far is stored (and reported)."""
        with self._changed:
            target = self._submitted
            while self._written < target and self._failure is None:
                self._changed.wait()
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue or self._failure is not None:
                    return
                batch, self._queue = self._queue, []
            try:
                # Coalesced changes are heard by nobody; otherwise on_task hears every one.
                notifying = not self._coalesce()
                changes = batch if notifying else _coalesced(batch)
                write = functools.partial(self._write, changes, notifying)
                stored = self._store.run_in_transaction(write)
                for state in stored:
                    self._notify(state)
            except BaseException as exc:  # noqa: BLE001 - raised in the run's threads
                with self._changed:
                    self._failure = exc
                    self._queue = []
                    self._changed.notify_all()
                return
            with self._changed:
                self._written += len(batch)
                self._changed.notify_all()

    def _write(
        self, changes: list[_Change], notifying: bool, tx: TransactionScope
    ) -> list[TaskState]:
        # A usage merge updates the workflow row too: lock it first (the lock order).
        tx.queue.fence(self._claim, exclusive=any(change.usages for change in changes))
        # One batch of upserts; the stored rows are read back only for whoever hears of them.
        rows = tx.tasks.upsert_states([change.state for change in changes], returning=notifying)
        by_id = {row.task_exec_id: row for row in rows}
        heard = []
        for change in changes:
            # The queued state is not changed here: a retried transaction writes it again.
            state = change.state
            usage = state.usage
            for added in change.usages:
                tx.workflows.merge_usage(self._claim.workflow_exec_id, added)
                usage = tx.tasks.merge_usage(state.task_exec_id, added)
            if notifying:
                # What on_task hears: every change in order, as this batch wrote it.
                row = by_id[state.task_exec_id]
                heard.append(
                    replace(
                        state, usage=usage, created_at=row.created_at, updated_at=row.updated_at
                    )
                )
        return heard


def _coalesced(batch: list[_Change]) -> list[_Change]:
    """One change per task: its last state, at the place of its first change (a parent row is
    then written before its children's), with every usage of the batch."""
    merged: dict[str, _Change] = {}
    for change in batch:
        earlier = merged.get(change.state.task_exec_id)
        if earlier is None:
            merged[change.state.task_exec_id] = _Change(change.state, list(change.usages))
        else:
            earlier.state = change.state
            earlier.usages.extend(change.usages)
    return list(merged.values())


class WorkflowRun:
    """One claimed execution of a definition; ``execute()`` runs it to a terminal state."""

    def __init__(
        self,
        store: Store,
        definition: WorkflowDefinition,
        state: WorkflowState,
        claim: Claim,
        templates: Templates,
        *,
        max_parallel_tasks: int,
        on_task: TaskCallback | None = None,
        on_callback_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._store = store
        self._definition = definition
        self._exec_id = state.workflow_exec_id
        self._claim = claim
        self._input = dict(state.input or {})
        self._templates = templates
        self._max_parallel = max_parallel_tasks
        self._on_task = on_task
        self._on_callback_error = on_callback_error
        self._finished: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # guards _finished, _stop_reason and _last_created
        self._stop_reason: str | None = None
        # What earlier claims left: parent task_exec_id ("" for the top level) -> its children
        # in creation order. Filled once, when the run starts.
        self._earlier: dict[str, list[TaskState]] = {}
        self._last_created: datetime | None = None  # created_at strictly grows in a run
        self._writes = _Writes(store, claim, self._notify, lambda: self._on_task is None)

    @property
    def claim(self) -> Claim:
        """The claim this run writes under."""
        return self._claim

    @property
    def workflow_id(self) -> str:
        """The id of the workflow definition this run executes."""
        return self._definition.id

    def set_callbacks(
        self,
        on_task: TaskCallback | None,
        on_callback_error: Callable[[BaseException], None] | None,
    ) -> None:
        """Who hears of each stored task state change, and of a failing ``on_task``."""
        self._on_task = on_task
        self._on_callback_error = on_callback_error

    def stop(self, reason: str) -> None:
        """Start no new task; the run raises ``RunStopped(reason)`` at its next task."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason

    # --- the workflow ----------------------------------------------------------------------

    def execute(self) -> WorkflowState:
        """Run the tasks in order, stop at the first failure, and complete the workflow.

        Raises ``RunStopped`` when stopped or ``ClaimLost`` when another worker holds the
        execution now; the caller decides what the execution becomes then.
        """
        self._load_earlier()
        self._writes.start()
        try:
            return self._execute()
        finally:
            self._writes.close()

    def _execute(self) -> WorkflowState:
        failed = None
        for task in self._definition.tasks:
            state = self._run_task(task, None, _Scope())
            if state.status is not Status.SUCCESS:
                failed = state
                break
        self._writes.flush()  # the tasks' rows before the workflow's end
        if failed is not None:
            return self._complete_failed(failed)
        transformer = None if self._definition.outputs is None else self._outputs_transformer()
        return self._write(
            lambda tx: tx.workflows.complete_workflow(self._exec_id, transformer),
            workflow_row=True,
        )

    def _load_earlier(self) -> None:
        tasks = self._store.tasks.list_states(TaskFilter(workflow_exec_id=self._exec_id))
        for task in tasks:  # oldest first
            self._earlier.setdefault(task.parent_state_id or "", []).append(task)
            if task.status is Status.SUCCESS:
                self._record(task)

    def _write(self, work: Callable[[TransactionScope], R], *, workflow_row: bool = False) -> R:
        """``work`` in one transaction that holds this run's claim (``ClaimLost`` if gone);
        ``workflow_row``: ``work`` updates the workflow's row too, so it is locked first."""

        def fenced(tx: TransactionScope) -> R:
            tx.queue.fence(self._claim, exclusive=workflow_row)
            return work(tx)

        return self._store.run_in_transaction(fenced)

    def _complete_failed(self, failed: TaskState) -> WorkflowState:
        # Say which task stopped the workflow; complete_workflow keeps an existing error.
        message = (failed.error or {}).get("message", "")
        verb = {Status.TIMED_OUT: "timed out", Status.CANCELED: "was canceled"}.get(
            failed.status, "failed"
        )
        error = {
            "message": f"task {failed.task_id!r} {verb}: {message}",
            "code": "TASK_FAILED",
            "task_id": failed.task_id,
            "task_exec_id": failed.task_exec_id,
        }

        def complete(tx: TransactionScope) -> WorkflowState:
            state = tx.workflows.get_state(self._exec_id)
            state.error = error
            tx.workflows.upsert_state(state)
            # No transformer: the output templates would read outputs that do not exist.
            return tx.workflows.complete_workflow(self._exec_id)

        return self._write(complete, workflow_row=True)

    def _outputs_transformer(self) -> OutputTransformer:
        outputs = self._definition.outputs

        def transform(_state: WorkflowState) -> dict[str, Any] | None:
            rendered = self._templates.render_value(outputs, self._context(_Scope()))
            return rendered if isinstance(rendered, dict) else None

        return transform

    # --- one task --------------------------------------------------------------------------

    def _created_at(self, count: int = 1) -> datetime:
        """The first of ``count`` created_at values, one microsecond apart and after every
        earlier one of this run: the creation order a resumed run reads back (a row is stored
        a moment after it is created, and rows written together get no order of their own)."""
        with self._lock:
            start = utc_now()
            if self._last_created is not None and start <= self._last_created:
                start = self._last_created + _TICK
            self._last_created = start + _TICK * (count - 1)
        return start

    def _new_state(
        self, task: TaskDefinition, parent: TaskState | None, created_at: datetime | None = None
    ) -> TaskState:
        return TaskState(
            task_id=task.id,
            workflow_id=self._definition.id,
            workflow_exec_id=self._exec_id,
            parent_state_id=None if parent is None else parent.task_exec_id,
            component=Component.TOOL if task.type == "basic" else Component.TASK,
            status=Status.PENDING,
            execution_type=task.execution_type,
            tool_id=task.tool if task.type == "basic" else None,
            created_at=created_at or self._created_at(),
        )

    def _earlier_state(self, parent: TaskState | None, task_id: str) -> TaskState | None:
        """The latest state an earlier claim left for ``task_id`` under ``parent``."""
        siblings = self._earlier.get("" if parent is None else parent.task_exec_id, [])
        found = [t for t in siblings if t.task_id == task_id]
        return found[-1] if found else None

    def _run_task(
        self,
        task: TaskDefinition,
        parent: TaskState | None,
        scope: _Scope,
        state: TaskState | None = None,
    ) -> TaskState:
        """Run ``task`` (already stored when ``state`` is given) and return its end state."""
        if state is None:
            state = self._earlier_state(parent, task.id)
        if state is not None and state.status.is_terminal:
            self._record(state)  # finished under an earlier claim: kept as it is
            return state
        with self._lock:
            if self._stop_reason is not None:
                raise RunStopped(self._stop_reason)
        self._writes.check()  # a write failed (ClaimLost, say): start nothing more
        if state is None:
            state = self._new_state(task, parent)
            self._save(state)
        early = self._interruption(state, scope, started=False)
        if early is not None:  # a container around it timed out, or a fail_fast sibling failed
            return self._end_task(state, early)
        state.status = Status.RUNNING
        self._save(state)
        if task.type != "basic" and task.timeout is not None:  # a basic task's is per attempt
            scope = scope.limited(self._timeout(task, state))
        try:
            outcome = self._handle(task, state, scope)
        except TaskFailure as failure:
            return self._end_task(state, failure)
        else:
            state.status = Status.SUCCESS
            state.output = outcome.output
            self._finish(state, outcome.usage)
        self._record(state)
        return state

    def _end_task(self, state: TaskState, failure: TaskFailure) -> TaskState:
        state.status = failure.status
        state.output = None
        state.error = failure.error()
        self._save(state)
        self._record(state)
        return state

    def _timeout(self, task: TaskDefinition, state: TaskState) -> _Limit:
        assert task.timeout is not None
        deadline = time.monotonic() + task.timeout
        return _Limit(task.id, state.task_exec_id, timeout=task.timeout, deadline=deadline)

    def _interruption(
        self, state: TaskState, scope: _Scope, *, started: bool = True
    ) -> TaskFailure | None:
        """How ``state``'s task must end now because of a limit in ``scope``, or None.

        The outermost limit that has fired explains the rest: the task's own timeout makes it
        TIMED_OUT; a container's timeout or a fail_fast sibling makes it CANCELED."""
        now = time.monotonic()
        for limit in scope.limits:
            reason = limit.reason(now)
            if reason is None:
                continue
            if limit.owner_exec_id == state.task_exec_id and limit.cancel is None:
                return TaskFailure(
                    "TIMED_OUT",
                    f"did not finish within its timeout of {limit.timeout:g}s",
                    Status.TIMED_OUT,
                )
            prefix = "canceled" if started else "not started"
            return TaskFailure("CANCELED", f"{prefix}: {reason}", Status.CANCELED)
        return None

    def _wait(
        self, done: threading.Event, state: TaskState, scope: _Scope, until: float = math.inf
    ) -> None:
        """Wait for ``done`` or the monotonic time ``until``; raise the ``TaskFailure`` a limit
        in ``scope`` ends the task with, and ``RunStopped`` (only when ``until`` is given: a
        pause between attempts, when no tool is running) if the run was stopped."""
        while True:
            failure = self._interruption(state, scope)
            if failure is not None:
                raise failure
            if until != math.inf:
                with self._lock:
                    if self._stop_reason is not None:
                        raise RunStopped(self._stop_reason)
            now = time.monotonic()
            if now >= until:
                return
            wake = min([until, *(limit.deadline for limit in scope.limits)])
            if any(limit.cancel is not None for limit in scope.limits) or until != math.inf:
                wake = min(wake, now + _CANCEL_POLL)
            if done.wait(max(wake - now, 0.0) if wake != math.inf else None):
                return

    def _record(self, state: TaskState) -> None:
        with self._lock:
            self._finished[state.task_id] = {
                "output": state.output,
                "status": state.status.value,
                "error": state.error,
            }

    def _handle(self, task: TaskDefinition, state: TaskState, scope: _Scope) -> _Outcome:
        if task.type == "basic":
            return self._basic(task, state, scope)
        if task.type == "composite":
            return self._composite(task, state, scope)
        if task.type == "parallel":
            children = [(child, scope) for child in task.tasks]
            return self._fan_out(task, state, scope, children, parallel=True)
        if task.type == "collection":
            return self._collection(task, state, scope)
        return self._router(task, state, scope)

    def _basic(self, task: TaskDefinition, state: TaskState, scope: _Scope) -> _Outcome:
        assert task.tool is not None
        arguments = self._render(task.with_args, scope, f"the arguments of task {task.id!r}")
        try:
            state.input = check_json_object(arguments, f"arguments of task {task.id!r}")
        except ValidationError as exc:
            raise TaskFailure("TEMPLATE_FAILED", str(exc)) from None
        attempts = 1 if task.retry is None else task.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(task, state, scope, copy.deepcopy(arguments))
            except TaskFailure as failure:
                if failure.code not in _RETRIED or attempt == attempts:
                    failure.attempts = attempt
                    if attempt > 1:
                        failure.message = f"{failure.message} (attempt {attempt} of {attempts})"
                    raise
                assert task.retry is not None
                delay = task.retry.delay(attempt)
                _log.info(
                    "Task %s of execution %s: attempt %d of %d failed (%s); next in %gs",
                    task.id,
                    self._exec_id,
                    attempt,
                    attempts,
                    failure.message,
                    delay,
                )
                self._wait(threading.Event(), state, scope, until=time.monotonic() + delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, task: TaskDefinition, state: TaskState, scope: _Scope, arguments: dict[str, Any]
    ) -> _Outcome:
        """One call of the tool. With a timeout or a fail_fast container around it, the tool
        runs on a daemon thread this one waits for; at a limit the task ends and the tool's
        thread is left to finish on its own, its result discarded."""
        assert task.tool is not None
        if task.timeout is not None:
            scope = scope.limited(self._timeout(task, state))
        try:
            # Resolved again here, not kept from load: definitions stay plain data.
            tool = resolve_tool(task.tool)
            if not scope.limits:
                result = tool(**arguments)
            else:
                result = self._call_watched(tool, arguments, task, state, scope)
            output, usage = tool_outcome(task.tool, result)
        except (TaskFailure, RunStopped):
            raise
        except Exception as exc:  # whatever a tool raises fails only its task
            raise TaskFailure("TOOL_FAILED", str(exc) or type(exc).__name__) from exc
        return _Outcome(output, usage)

    def _call_watched(
        self,
        tool: Callable[..., Any],
        arguments: dict[str, Any],
        task: TaskDefinition,
        state: TaskState,
        scope: _Scope,
    ) -> Any:
        done = threading.Event()
        outcome: list[tuple[bool, Any]] = []

        def call() -> None:
            try:
                outcome.append((True, tool(**arguments)))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome.append((False, exc))
            finally:
                done.set()

        name = f"compozy-tool-{task.id}"
        threading.Thread(target=call, name=name, daemon=True).start()
        self._wait(done, state, scope)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _composite(self, task: TaskDefinition, state: TaskState, scope: _Scope) -> _Outcome:
        last: TaskState | None = None
        for child in task.tasks:
            last = self._run_task(child, state, scope)
            if last.status is not Status.SUCCESS:
                raise self._interruption(state, scope) or _child_failure([last])
        assert last is not None  # load refuses a composite without tasks
        return _Outcome(dict(last.output or {}))

    def _collection(self, task: TaskDefinition, state: TaskState, scope: _Scope) -> _Outcome:
        items = self._render(task.items, scope, f"the items of task {task.id!r}")
        if not isinstance(items, list):
            raise TaskFailure(
                "TEMPLATE_FAILED",
                f"the items of collection task {task.id!r} rendered to a "
                f"{type(items).__name__}, not a list",
            )
        assert task.task is not None
        children = [
            (task.task, replace(scope, item=item, index=index)) for index, item in enumerate(items)
        ]
        return self._fan_out(task, state, scope, children, parallel=task.mode == "parallel")

    def _router(self, task: TaskDefinition, state: TaskState, scope: _Scope) -> _Outcome:
        assert task.condition is not None
        key = route_key(self._render(task.condition, scope, f"the condition of {task.id!r}"))
        chosen = task.routes.get(key)
        if chosen is None:
            raise TaskFailure(
                "NO_ROUTE",
                f"router task {task.id!r}: the condition gave {key!r}, which is not a route; "
                f"routes: {', '.join(task.routes)}",
            )
        child = self._run_task(chosen, state, scope)
        if child.status is not Status.SUCCESS:
            raise self._interruption(state, scope) or _child_failure([child])
        return _Outcome({"route": key, "output": child.output})

    def _fan_out(
        self,
        task: TaskDefinition,
        state: TaskState,
        scope: _Scope,
        children: list[tuple[TaskDefinition, _Scope]],
        *,
        parallel: bool,
    ) -> _Outcome:
        pending = self._earlier.get(state.task_exec_id, [])
        if len(pending) != len(children):  # a new fan-out (children are stored all at once)
            pending = self._store_children(state, [child for child, _ in children])
        cancel = _Cancel() if task.strategy == "fail_fast" else None
        limit = None if cancel is None else _Limit(task.id, state.task_exec_id, cancel=cancel)

        def run_one(index: int) -> TaskState:
            child, scope = children[index]
            done = self._run_task(child, state, scope.limited(limit), pending[index])
            if cancel is not None and done.status in (Status.FAILED, Status.TIMED_OUT):
                verb = "failed" if done.status is Status.FAILED else "timed out"
                cancel.set(f"task {done.task_id!r} {verb} and {task.id!r} is fail_fast")
            return done

        results: list[TaskState] = []
        if pending:
            # A pool per container, not one shared pool: a container waiting for its children
            # would otherwise hold a worker that nested containers need, and could deadlock.
            workers = min(len(pending), self._max_parallel) if parallel else 1
            results = _map_on_daemon_threads(run_one, len(pending), workers, f"compozy-{task.id}")
        failed = [r for r in results if r.status is not Status.SUCCESS]
        if failed:
            raise self._interruption(state, scope) or _child_failure(failed)
        return _Outcome({"results": [r.output for r in results]})

    # --- helpers ---------------------------------------------------------------------------

    def _context(self, scope: _Scope) -> dict[str, Any]:
        with self._lock:
            finished = FinishedTasks(self._finished)
        context: dict[str, Any] = {
            "input": self._input,
            "tasks": finished,
            "workflow": {"id": self._definition.id, "exec_id": self._exec_id},
        }
        if scope.item is not _UNSET:
            context["item"] = scope.item
            context["index"] = scope.index
        return context

    def _render(self, value: Any, scope: _Scope, what: str) -> Any:
        try:
            return self._templates.render_value(value, self._context(scope))
        except TemplateFailure as exc:
            raise TaskFailure("TEMPLATE_FAILED", f"{what}: {exc}") from None

    def _save(self, state: TaskState) -> None:
        """Queue ``state`` (as it is now) for the writer."""
        self._writes.submit([state])

    def _store_children(self, parent: TaskState, tasks: list[TaskDefinition]) -> list[TaskState]:
        """Queue a fan-out's children PENDING together (one transaction stores them all), in a
        creation order that a resumed run reads back the same."""
        start = self._created_at(len(tasks))
        children = [
            self._new_state(task, parent, start + _TICK * index) for index, task in enumerate(tasks)
        ]
        self._writes.submit(children)
        return children

    def _finish(self, state: TaskState, usage: UsageSummary | None) -> None:
        """Queue the final state; its usage is merged into the task and the workflow in the
        transaction that stores it."""
        self._writes.submit([state], usage)

    def _notify(self, stored: TaskState) -> None:
        """Report a committed state to ``on_task``; only the writer thread calls this, so calls
        come one at a time without holding the run's lock (a slow callback delays writes, not
        the tasks)."""
        if self._on_task is None:
            return
        try:
            self._on_task(stored)
        except Exception as exc:  # noqa: BLE001 - a progress display never fails a run
            if self._on_callback_error is not None:
                self._on_callback_error(exc)


def _map_on_daemon_threads(
    work: Callable[[int], R], count: int, workers: int, name: str
) -> list[R]:
    """``[work(0), ..., work(count - 1)]`` on ``workers`` threads; the first error (by index)
    is raised once all have ended. Daemon threads, unlike a ThreadPoolExecutor's: a tool still
    running in an execution that a stopping worker released must not keep the process alive."""
    indexes = iter(range(count))
    lock = threading.Lock()
    outcomes: dict[int, tuple[bool, Any]] = {}

    def loop() -> None:
        while True:
            with lock:
                index = next(indexes, None)
            if index is None:
                return
            try:
                outcomes[index] = (True, work(index))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
                outcomes[index] = (False, exc)

    threads = [
        threading.Thread(target=loop, name=f"{name}-{i}", daemon=True) for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results: list[R] = []
    for index in range(count):
        ok, value = outcomes[index]
        if not ok:
            raise value
        results.append(value)
    return results


def _child_failure(failed: list[TaskState]) -> TaskFailure:
    first = next((s for s in failed if s.status is Status.FAILED), failed[0])
    message = (first.error or {}).get("message", first.status.value)
    others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return TaskFailure("CHILD_FAILED", f"child task {first.task_id!r} failed{others}: {message}")

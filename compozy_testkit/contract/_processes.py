"""Run one workload in several processes, each with its own Store on the same database.

Processes are started with ``spawn``, never ``fork``: the test process has threads and
connection pools that a forked child would inherit half-way through their use. Spawn pickles
the target by reference, so it must be a module-level function, and its argument must be
picklable (ids and counts; the ``DatabaseConfig`` travels the same way).

Starting a spawned process costs far more than a workload (a new interpreter imports compozy,
SQLAlchemy and the driver: seconds on a busy two-core machine), so a ``ProcessPool`` keeps its
processes between runs (the concurrency contract shares one across its test class; the queue
contract's multi-process claim test uses one for its single run) and starts new ones only after
a run that went wrong.
For each run every process opens its own Store, checks that it reaches the database, waits at
a barrier so that all of them start the workload together, closes its Store again (so nothing
holds the database between runs) and sends back the target's return value or the error that
stopped it, so the test can assert on the real messages.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Barrier
from typing import Any, Generic, TypeVar

from compozy.config import DatabaseConfig
from compozy.core.closing import ClosedOnExit
from compozy.store import Store, open_store

PROCESSES = 4
TIMEOUT = 120.0
"""Seconds a run may take before the processes still busy are reported and stopped."""

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcomes(Generic[R]):
    """What the processes reported: the values of those that finished, the errors of the rest."""

    values: list[R]
    errors: list[str]


def _describe(index: int, exc: BaseException) -> str:
    return f"process {index}: " + "".join(traceback.format_exception_only(exc)).strip()


def _run_job(
    config: DatabaseConfig,
    barrier: Barrier,
    index: int,
    target: Callable[[Store, int, Any], Any],
    arg: Any,
) -> tuple[bool, Any]:
    """Open a Store, wait for the other processes, run ``target(store, index, arg)``."""
    try:
        store = open_store(config)
        try:
            health = store.health()  # connects now, so the barrier releases warm workers
            if not health.ok:
                raise RuntimeError(f"cannot use {health.location}: {health.detail}")
            barrier.wait(timeout=TIMEOUT)
            return (True, target(store, index, arg))
        finally:
            store.close()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        barrier.abort()  # the others must not wait for a worker that will never arrive
        return (False, _describe(index, exc))


def _serve(conn: Connection, barrier: Barrier, index: int) -> None:
    """A pool process: run each job the parent sends, until it sends None or goes away."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if job is None:
            # Nothing to clean up (each job closed its Store), and a full interpreter shutdown
            # of everything spawn imported takes seconds on a busy machine.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        config, target, arg = job
        outcome = _run_job(config, barrier, index, target, arg)
        try:
            conn.send(outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. a value that does not pickle
            conn.send((False, _describe(index, exc)))


class ProcessPool(ClosedOnExit):
    """``count`` spawned processes, started on first use and kept between runs (until
    ``close()``, or the end of a ``with`` block)."""

    def __init__(self, count: int = PROCESSES) -> None:
        self.count = count
        self._processes: list[SpawnProcess] = []
        self._conns: list[Connection] = []
        self._barrier: Barrier | None = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        # Kept while the processes live: dropping it would delete the semaphores under them.
        self._barrier = barrier = ctx.Barrier(self.count)
        for index in range(self.count):
            parent_end, child_end = ctx.Pipe()
            process = ctx.Process(
                target=_serve,
                args=(child_end, barrier, index),
                name=f"compozy-contract-{index}",
                daemon=True,
            )
            process.start()
            child_end.close()  # the child has its copy: EOF on parent_end means it died
            self._processes.append(process)
            self._conns.append(parent_end)

    def run(
        self, config: DatabaseConfig, target: Callable[[Store, int, A], R], arg: A
    ) -> Outcomes[R]:
        """Run ``target(store, i, arg)`` in every process, all released together.

        ``target`` must be a module-level function. Returns the values of the processes that
        finished (in process order) and one message per process that failed, crashed or hung;
        after any of those the processes are stopped, and the next run starts new ones.
        """
        if not self._processes:
            self._start()
        values: dict[int, R] = {}
        errors: dict[int, str] = {}
        pending: dict[int, Connection] = {}
        for index, conn in enumerate(self._conns):
            try:
                conn.send((config, target, arg))
                pending[index] = conn
            except OSError as exc:
                errors[index] = _describe(index, exc)
        deadline = time.monotonic() + TIMEOUT
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait(list(pending.values()), timeout=remaining):
                break
            for index, conn in list(pending.items()):
                if not conn.poll():
                    continue
                del pending[index]
                try:
                    ok, value = conn.recv()
                except (EOFError, OSError):  # the process died
                    process = self._processes[index]
                    process.join(timeout=10)
                    errors[index] = (
                        f"process {index}: exited with code {process.exitcode} without reporting"
                    )
                    continue
                if ok:
                    values[index] = value
                else:
                    errors[index] = value
        for index in pending:
            errors[index] = f"process {index}: reported nothing within {TIMEOUT:g}s"
        if errors:
            # A broken barrier, a dead or a hung process: start afresh next time.
            self.close()
        return Outcomes(
            values=[values[i] for i in sorted(values)], errors=[errors[i] for i in sorted(errors)]
        )

    def close(self) -> None:
        """Ask the processes to stop, and stop those that do not."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # that process is gone already
                conn.send(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
        self._processes.clear()
        self._conns.clear()
        self._barrier = None

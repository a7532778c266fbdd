"""How engines in several processes hear about new and finished executions at once.

The database stays the queue and the poll (``runtime.poll_interval``) stays the fallback: a
signal only makes a worker claim, or a waiter read, sooner; a missed one costs at most a poll.

- In one process: ``Engine.start`` wakes its own worker loop, and a run that ends tells the
  waiters of that execution (``Changes``).
- PostgreSQL: ``NOTIFY compozy_queue`` after an execution is stored, and
  ``NOTIFY compozy_done, '<workflow_exec_id>'`` after one ends; every engine that serves or
  has waiters ``LISTEN``\\s on one connection of its pool.
- A SQLite file (processes on one host): two "doorbell" files next to the database,
  ``<database>-queue`` and ``<database>-done``; ringing one appends a byte, and the watcher of
  every process looks at their size and time every 10 ms (a ``stat``, no query).
- SQLite in memory: one process only, so nothing to watch.

The store offers no LISTEN of its own, so the PostgreSQL listener borrows a pooled connection
through ``compozy.store.sql_connection`` and switches it to autocommit for as long as it
listens (restored before it goes back to the pool).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compozy.engine.definitions import LOGGER_NAME
from compozy.errors import CompozyError

if TYPE_CHECKING:
    from compozy.store import Store

__all__ = ["DONE_CHANNEL", "QUEUE_CHANNEL", "Changes", "Watcher", "announce", "doorbell"]

QUEUE_CHANNEL = "compozy_queue"
DONE_CHANNEL = "compozy_done"
FILE_TICK = 0.01  # how often the SQLite watcher looks at the doorbells
DOORBELL_LIMIT = 4096  # a doorbell longer than this is emptied by the next ring
_log = logging.getLogger(LOGGER_NAME)

Callback = Callable[[], None]


class Changes:
    """Who waits for which execution; callbacks run on the thread that reports a change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, set[Callback]] = {}

    def watch(self, exec_id: str, callback: Callback) -> Callback:
        """Call ``callback`` when ``exec_id`` may have changed; returns the unsubscribe."""
        with self._lock:
            self._watchers.setdefault(exec_id, set()).add(callback)

        def unsubscribe() -> None:
            with self._lock:
                found = self._watchers.get(exec_id)
                if found is not None:
                    found.discard(callback)
                    if not found:
                        del self._watchers[exec_id]

        return unsubscribe

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._watchers)

    def changed(self, exec_id: str) -> None:
        """``exec_id`` may have changed: tell its watchers."""
        with self._lock:
            callbacks = list(self._watchers.get(exec_id, ()))
        _call(callbacks)

    def changed_except(self, local: Callable[[str], bool]) -> None:
        """Something may have changed: tell the watchers of every execution not run here
        (those this process runs are told when they end)."""
        with self._lock:
            callbacks = [c for e, cs in self._watchers.items() if not local(e) for c in cs]
        _call(callbacks)


def _call(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - one waiter's failure must not stop the others
            _log.exception("A waiter's wake-up callback failed")


def doorbell(store: Store, channel: str) -> Path | None:
    """The doorbell file of ``channel`` for a SQLite file store; None for other stores."""
    if store.driver != "sqlite" or not store.files():
        return None
    return Path(f"{store.files()[0]}-{channel.removeprefix('compozy_')}")


def announce(store: Store, channel: str, payload: str = "") -> None:
    """Tell the engines of other processes: ``NOTIFY channel, payload`` on PostgreSQL, a ring of
    the channel's doorbell next to a SQLite file (nothing in memory). A failure is logged at
    debug level only: the poll picks the change up."""
    bell = doorbell(store, channel)
    if bell is not None:
        try:
            _ring(bell)
        except OSError as exc:
            _log.debug("Ringing %s failed (%s); the poll picks the change up", bell, exc)
        return
    if store.driver != "postgres":
        return
    from compozy.store import sql_connection

    try:
        with sql_connection(store, write=True) as conn:
            conn.exec_driver_sql("SELECT pg_notify(%(c)s, %(p)s)", {"c": channel, "p": payload})
    except CompozyError as exc:
        _log.debug("NOTIFY %s failed (%s); the poll picks the change up", channel, exc)


class Watcher:
    """A daemon thread that turns other processes' announcements into calls: ``on_queue()``
    (an execution was stored), ``on_done(exec_id)`` (one ended, PostgreSQL) and
    ``on_some_done()`` (one or more ended, SQLite's doorbell does not say which).
    ``on_queue`` is also called when listening failed or (re)started, since an announcement
    may have been missed."""

    def __init__(
        self,
        store: Store,
        *,
        on_queue: Callback,
        on_done: Callable[[str], None],
        on_some_done: Callback,
        retry: float,
    ) -> None:
        self._store = store
        self._on_queue = on_queue
        self._on_done = on_done
        self._on_some_done = on_some_done
        self._retry = retry
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set once the first LISTEN or look is in place

    @property
    def needed(self) -> bool:
        """False where no other process can share the database (SQLite in memory)."""
        return self._store.driver == "postgres" or bool(self._store.files())

    @property
    def running(self) -> bool:
        """True while the thread watches (started and not stopped)."""
        return self._thread is not None and not self._halt.is_set()

    def start(self, name: str) -> None:
        if self._thread is None and self.needed and not self._halt.is_set():
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching; waits a moment for the thread (a daemon: it cannot outlive us)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        problem: str | None = None
        while not self._halt.is_set():
            try:
                if self._store.driver == "postgres":
                    self._listen()
                else:
                    self._look()
            except Exception as exc:  # noqa: BLE001 - the poll covers for us meanwhile
                said = f"{type(exc).__name__}: {exc}"
                if said != problem:
                    _log.info("Wake-ups stopped (%s); retrying every %gs", said, self._retry)
                problem = said
                self._missed()
                self._halt.wait(self._retry)

    def _missed(self) -> None:
        """Announcements made before we listened (or while we could not) are lost: claim and
        re-read now, as if told."""
        self._on_queue()
        self._on_some_done()

    def _look(self) -> None:
        """SQLite: look at the doorbells every FILE_TICK."""
        queue, done = doorbell(self._store, QUEUE_CHANNEL), doorbell(self._store, DONE_CHANNEL)
        assert queue is not None
        assert done is not None
        seen = _stamp(queue), _stamp(done)
        self.listening.set()
        self._missed()
        while not self._halt.wait(FILE_TICK):
            now = _stamp(queue), _stamp(done)
            if now[0] != seen[0]:
                self._on_queue()
            if now[1] != seen[1]:
                self._on_some_done()
            seen = now

    def _listen(self) -> None:
        with _autocommit(self._store) as raw:
            raw.execute(f"LISTEN {QUEUE_CHANNEL}")
            raw.execute(f"LISTEN {DONE_CHANNEL}")
            self.listening.set()
            self._missed()
            while not self._halt.is_set():
                for note in raw.notifies(timeout=0.25):
                    if note.channel == QUEUE_CHANNEL:
                        self._on_queue()
                    else:
                        self._on_done(note.payload)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _ring(path: Path) -> None:
    """Append a byte (the size changes even when the clock's tick does not); empty the file
    now and then. Emptying changes the size too, so a look never misses a ring it could see."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size >= DOORBELL_LIMIT:
            os.ftruncate(fd, 0)
        os.write(fd, b".")
    finally:
        os.close(fd)


@contextmanager
def _autocommit(store: Store) -> Iterator[Any]:
    """A pooled PostgreSQL connection's driver connection, in autocommit while borrowed."""
    from compozy.store import sql_connection

    with sql_connection(store) as conn:
        raw: Any = conn.connection.driver_connection
        raw.commit()  # end the transaction sql_connection began: notifications arrive between
        raw.autocommit = True
        try:
            yield raw
        finally:
            if not raw.closed:
                raw.execute("UNLISTEN *")
                raw.autocommit = False

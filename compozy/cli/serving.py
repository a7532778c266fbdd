"""What ``compozy start`` and ``compozy worker`` share: signals and a graceful stop.

The first SIGINT or SIGTERM stops claiming, says so, gives the running executions
``runtime.shutdown_grace`` to finish, releases the rest (another worker resumes them at once)
and exits. A second one exits at once: the leases then expire and other workers resume.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from compozy.engine import Engine

__all__ = ["EXIT_INTERRUPTED", "Stopper", "stop_gracefully"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_log = logging.getLogger("compozy.worker")


class Stopper:
    """Turns the first SIGINT/SIGTERM into a stop request and the second into an exit."""

    def __init__(self, on_first: Callable[[], None] | None = None, *, hint: str = "") -> None:
        self.requested = threading.Event()
        self._on_first = on_first
        self._hint = hint

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested.is_set():
            self.requested.set()
            if self._on_first is not None:
                self._on_first()
            return
        sys.stderr.write(f"error: {signal.Signals(signum).name} again: exiting now{self._hint}\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    @contextmanager
    def installed(self) -> Iterator[Stopper]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""
        previous = {sig: signal.signal(sig, self._handle) for sig in _SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait(self) -> None:
        """Block until a stop is requested (waking up so signal handlers run promptly)."""
        while not self.requested.wait(0.2):
            pass


def stop_gracefully(engine: Engine, grace: float) -> list[str]:
    """Stop claiming, wait up to ``grace`` for running executions, release the rest."""
    running = engine.running
    _log.warning(
        "stopping: no new executions are claimed; waiting up to %gs for %d running "
        "execution(s) (press Ctrl-C again to exit now)",
        grace,
        len(running),
    )
    released = engine.shutdown(grace)
    if released:
        _log.warning(
            "released %d unfinished execution(s) for another worker to resume: %s",
            len(released),
            ", ".join(released),
        )
    return released

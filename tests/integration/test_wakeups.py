"""Wake-ups across processes, on a SQLite file and on PostgreSQL: an execution stored by one
process is claimed by a worker in another at once, and a waiter in one process hears at once
that another process finished it; a missed announcement costs one poll, nothing more.

Every process here polls every 60 s, so what happens within the 20 s deadlines happens because
of an announcement (PostgreSQL's NOTIFY, SQLite's doorbell files), not because of the poll.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from cli_support import SHARED_BACKENDS
from test_workers import Proc, Processes, _store_pending, _until, setup

from compozy.core import Status
from compozy.engine import Engine
from compozy.engine.wakeups import QUEUE_CHANNEL, announce
from compozy.store import Store

pytestmark = SHARED_BACKENDS
__all__ = ["setup"]  # test_workers's fixture: the processes of a test and a Store of its own

SLOW_POLL = 60.0
DEADLINE = 20.0  # well under SLOW_POLL


def _config(
    project: Path, name: str, *, poll: float = SLOW_POLL, workflows: str = "workflows"
) -> str:
    path = project / f"{name}.yaml"
    path.write_text(
        f"workflows: [{workflows}/*.yaml]\n"
        f"runtime: {{lease: {poll * 2:g}s, poll_interval: {poll:g}s, worker_id: {name}}}\n"
    )
    return str(path)


def _worker(processes: Processes, name: str, *, poll: float = SLOW_POLL) -> Proc:
    proc = processes.spawn(name, "worker", "--config", _config(processes.project, name, poll=poll))
    proc.wait_for_err(f"worker {name} on ", 60)
    return proc


def _status(store: Store, exec_id: str) -> Status:
    return store.workflows.get_state(exec_id).status


def _finished(store: Store, exec_id: str) -> Status:
    return _until(
        lambda: _status(store, exec_id) if _status(store, exec_id).is_terminal else None,
        DEADLINE,
        lambda: f"{exec_id} is still {_status(store, exec_id).value}",
    )


def test_a_worker_claims_at_once_what_another_process_stored_and_announced(
    setup: tuple[Processes, Store],
) -> None:
    processes, store = setup
    _worker(processes, "w")
    # The first one proves the worker listens (stored after it started, claimed within the
    # deadline: by the announcement, or by the look it takes once it listens).
    first = _store_pending(store, "brief")
    announce(store, QUEUE_CHANNEL)
    assert _finished(store, first) is Status.SUCCESS
    time.sleep(1.0)  # the round the worker runs when a run ends is over
    # Stored without announcing: the worker does not know, so it stays PENDING...
    second = _store_pending(store, "brief")
    time.sleep(1.5)
    assert _status(store, second) is Status.PENDING
    # ...until it is announced, as `Engine.start` (so the API) does after storing one.
    announce(store, QUEUE_CHANNEL)
    assert _finished(store, second) is Status.SUCCESS


def test_an_execution_nobody_announced_is_claimed_at_the_next_poll(
    setup: tuple[Processes, Store],
) -> None:
    processes, store = setup
    _worker(processes, "w", poll=0.5)
    exec_id = _store_pending(store, "brief")  # a lost announcement: none at all
    assert _finished(store, exec_id) is Status.SUCCESS


def test_a_waiter_hears_at_once_that_another_process_finished_the_execution(
    setup: tuple[Processes, Store],
) -> None:
    processes, store = setup
    exec_id = _store_pending(store, "brief")
    # An engine that runs nothing: its watch is what Engine.wait and the API's ?wait= use.
    waiter = Engine(store, {}, poll_interval=SLOW_POLL, lease=SLOW_POLL * 2)
    changed = threading.Event()
    unsubscribe = waiter.watch(exec_id, changed.set)

    def told_finished() -> Status | None:
        # Read only when told: without a signal from the worker's process this never ends.
        if not changed.wait(0.05):
            return None
        changed.clear()
        status = _status(store, exec_id)
        return status if status.is_terminal else None

    try:
        _worker(processes, "w", poll=0.5)  # claims it once it is up
        status = _until(told_finished, DEADLINE, lambda: f"not told; {_status(store, exec_id)}")
        assert status is Status.SUCCESS
    finally:
        unsubscribe()
        waiter.close(wait=False)


def test_the_api_long_poll_answers_when_another_process_finishes_the_execution(
    setup: tuple[Processes, Store],
) -> None:
    processes, store = setup
    project = processes.project
    # The API server's engine runs only `other`; `brief` runs in a worker process.
    (project / "other").mkdir()
    (project / "other" / "other.yaml").write_text(
        "id: other\ntasks:\n  - {id: one, tool: echo, with: {n: 1}}\n"
    )
    config = _config(project, "api", workflows="other")
    api = processes.spawn("api", "start", "--port", str(port := _port()), "--config", config)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE + 10)
    try:
        _until(lambda: _healthy(client, api), 60, api.describe)
        exec_id = _store_pending(store, "brief")
        path = f"/api/v0/executions/workflows/{exec_id}"
        over = client.get(path, params={"wait": 0.5}, headers=processes.headers)
        assert over.status_code == 200
        assert over.json()["status"] == "PENDING"  # nobody runs it yet: the wait ran out

        answers: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: answers.append(
                client.get(path, params={"wait": DEADLINE}, headers=processes.headers)
            )
        )
        thread.start()
        _worker(processes, "w", poll=0.5)
        thread.join(DEADLINE + 10)
        assert [a.status_code for a in answers] == [200]
        body = answers[0].json()
        assert body["status"] == "SUCCESS"
        assert [t["task_id"] for t in body["tasks"]] == ["nap"]
        assert body["worker_id"] == "w"
    finally:
        client.close()


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(client: httpx.Client, proc: Proc) -> bool:
    assert proc.process.poll() is None, proc.describe()
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False

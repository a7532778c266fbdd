"""``GET /metrics``: Prometheus's text exposition format (version 0.0.4), written here.

Executions by workflow and status and the durations of finished ones come from the database
(compozy.store.stats), so every server over one database reports the same figures: scrape one,
or aggregate with ``max`` rather than ``sum``. The pool figures are this process's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import compozy
from compozy.errors import CompozyError
from compozy.store import Store
from compozy.store.stats import execution_figures, pool_figures

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds (seconds) of the execution duration histogram's buckets; +Inf is added."""

_EXECUTIONS = "compozy_workflow_executions"
_DURATION = "compozy_workflow_execution_duration_seconds"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    yield from samples


def _execution_lines(store: Store) -> Iterator[str]:
    figures = execution_figures(store, DURATION_BUCKETS)
    yield from _family(
        _EXECUTIONS,
        "gauge",
        "Workflow executions stored in the database, by workflow and status.",
        (
            f"{_EXECUTIONS}{_labels(workflow_id=f.workflow_id, status=f.status)} {f.count}"
            for f in figures
        ),
    )
    samples = []
    for f in figures:
        if f.duration_sum is None:
            continue
        bounds = [*(_number(b) for b in DURATION_BUCKETS), "+Inf"]
        for bound, count in zip(bounds, [*f.duration_buckets, f.count], strict=True):
            labels = _labels(workflow_id=f.workflow_id, status=f.status, le=bound)
            samples.append(f"{_DURATION}_bucket{labels} {count}")
        labels = _labels(workflow_id=f.workflow_id, status=f.status)
        samples.append(f"{_DURATION}_sum{labels} {_number(f.duration_sum)}")
        samples.append(f"{_DURATION}_count{labels} {f.count}")
    yield from _family(
        _DURATION,
        "histogram",
        "Seconds from creation to completion of finished workflow executions (SUCCESS, "
        "FAILED, TIMED_OUT, CANCELED), by workflow and status.",
        samples,
    )


def _pool_lines(store: Store) -> Iterator[str]:
    pool = pool_figures(store)
    if pool is None:
        return
    size = [f"compozy_db_pool_size {pool.size}"]
    yield from _family("compozy_db_pool_size", "gauge", "Connections the pool keeps.", size)
    yield from _family(
        "compozy_db_pool_connections",
        "gauge",
        "Open connections of this process's pool, in use or idle.",
        [
            f'compozy_db_pool_connections{{state="in_use"}} {pool.in_use}',
            f'compozy_db_pool_connections{{state="idle"}} {pool.idle}',
        ],
    )
    yield from _family(
        "compozy_db_pool_overflow",
        "gauge",
        "Connections open beyond the pool size (database.max_overflow at most).",
        [f"compozy_db_pool_overflow {pool.overflow}"],
    )


def render_metrics(store: Store) -> str:
    """Every metric, as Prometheus scrapes it. An unreachable database is reported as
    ``compozy_database_up 0`` (without the execution figures), not as an error."""
    lines = list(
        _family(
            "compozy_info",
            "gauge",
            "This compozy's version and database driver.",
            [f"compozy_info{_labels(version=compozy.__version__, driver=store.driver)} 1"],
        )
    )
    try:
        executions = list(_execution_lines(store))
    except CompozyError:
        executions = []
    lines += _family(
        "compozy_database_up",
        "gauge",
        "1 if the database answered this scrape, else 0.",
        [f"compozy_database_up {1 if executions else 0}"],
    )
    lines += executions
    lines += _pool_lines(store)
    return "\n".join(lines) + "\n"

"""The hot reads use their indexes on every backend: each test records the SQL a repository
call really sends (``record_statements``), asks the database for its plan of exactly that
statement (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN (FORMAT JSON)``) and checks the
index it reads, that no table is scanned whole, and, where the index gives the order, that
nothing is sorted. A changed query or a dropped index breaks these tests.

The plans are of the statement, not of its values: SQLite plans before it binds anything, and
PostgreSQL is asked for its generic plan (``PREPARE``, ``plan_cache_mode =
force_generic_plan``), the one a prepared statement settles on after a few runs. The rows come
from a dataset built once per worker and backend and ANALYZEd, so the planners see realistic
statistics; PostgreSQL also plans with ``enable_seqscan`` off, so that a close call on a small
table cannot flip a test, while a missing index still shows as a Seq Scan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from compozy.core import Status
from compozy.store import Store, migrations, sql_connection
from compozy.store.recording import record_statements
from compozy.store.repos.paging import encode_cursor
from compozy.store.tables import task_states, workflow_states
from compozy.workflow import WorkflowFilter
from compozy_testkit.contract.migrations import expected_names, schema_names
from compozy_testkit.databases import TestDatabase
from compozy_testkit.datasets import dataset

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXECUTIONS = 3_000  # workflow_states rows: 30 workflow ids, 20% FAILED, 2% RUNNING
BUSY = [f"ex-{EXECUTIONS - 30 * (e + 1):05d}" for e in range(20)]  # flow-00's newest executions
CHILDREN = 99  # each execution of BUSY has a root task with this many children
CHAIN = 60  # one more execution: a parent chain this long
TABLES = ("workflow_states", "task_states", "child")  # "child": get_task_tree's alias
PK = {"sqlite": "sqlite_autoindex_task_states_1", "postgres": "pk_task_states"}


def _status(n: int) -> str:
    return "RUNNING" if n % 50 == 0 else "FAILED" if (n // 30) % 5 == 1 else "SUCCESS"


def _task(exec_id: str, n: int, wf: str, parent: str | None, at: datetime) -> dict[str, Any]:
    return {
        "task_exec_id": exec_id,
        "task_id": f"t-{n}",
        "workflow_id": "flow-00",
        "workflow_exec_id": wf,
        "parent_state_id": parent,
        "component": "task",
        "status": "SUCCESS",
        "execution_type": "basic",
        "created_at": at,
        "updated_at": at,
    }


@dataset("query-plans")
def _query_plans(store: Store) -> None:
    """EXECUTIONS executions; those of BUSY with a root task and its children; one chain."""
    executions = [
        {
            "workflow_exec_id": f"ex-{n:05d}",
            "workflow_id": f"flow-{n % 30:02d}",
            "status": _status(n),
            "created_at": T0 + timedelta(seconds=n),
            "updated_at": T0 + timedelta(seconds=n),
        }
        for n in range(EXECUTIONS)
    ]
    tasks: list[dict[str, Any]] = []
    for e, wf in enumerate(BUSY):
        at = T0 + timedelta(seconds=e)
        root = f"{wf}-root"
        tasks.append(_task(root, 0, wf, None, at))
        tasks += [
            _task(f"{wf}-{n:03d}", n, wf, root, at + timedelta(microseconds=n))
            for n in range(1, CHILDREN + 1)
        ]
    chain_wf = f"ex-{EXECUTIONS - 1:05d}"
    for n in range(CHAIN):
        parent = f"chain-{n - 1:03d}" if n else None
        tasks.append(_task(f"chain-{n:03d}", n, chain_wf, parent, T0 + timedelta(microseconds=n)))
    with sql_connection(store, write=True) as conn:
        conn.execute(sa.insert(workflow_states), executions)
        conn.execute(sa.insert(task_states), tasks)
        conn.execute(sa.text("ANALYZE"))


@dataclass
class Plan:
    """What a plan reads, the same on both databases."""

    statement: str
    lines: list[str]  # the plan as the database printed it, for failure messages
    indexes: set[str] = field(default_factory=set)  # every index it reads
    full_scans: list[str] = field(default_factory=list)  # tables (or aliases) read whole
    sorts: bool = False  # rows are sorted after they are read (ORDER BY not from an index)

    def __str__(self) -> str:
        return " ".join(self.statement.split())[:400] + "\n  " + "\n  ".join(self.lines)


_SQLITE_SCAN = re.compile(r"^(SCAN|SEARCH) (\S+)(?: USING (?:COVERING )?INDEX (\S+))?")


def _sqlite_plan(conn: sa.Connection, statement: str) -> Plan:
    unbound = (None,) * statement.count("?")  # SQLite plans without looking at values
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, unbound).all()
    plan = Plan(statement, [str(row[3]) for row in rows])
    for line in plan.lines:
        found = _SQLITE_SCAN.match(line)
        if found is not None:
            kind, table, index = found.groups()
            if index is not None:
                plan.indexes.add(index)
            elif kind == "SCAN" and table in TABLES:
                plan.full_scans.append(table)
        if re.match(r"USE TEMP B-TREE FOR (RIGHT PART OF )?ORDER BY", line):
            plan.sorts = True
    return plan


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _postgres_plan(conn: sa.Connection, statement: str) -> Plan:
    numbers: dict[str, int] = {}  # psycopg's %(name)s placeholders become $1, $2, ...

    def number(found: re.Match[str]) -> str:
        return f"${numbers.setdefault(found.group(1), len(numbers) + 1)}"

    sql = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql(f"PREPARE compozy_plan AS {sql}")
    nulls = ", ".join(["NULL"] * len(numbers))
    execute = f"EXECUTE compozy_plan({nulls})" if numbers else "EXECUTE compozy_plan"
    raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {execute}").scalar_one()
    conn.exec_driver_sql("DEALLOCATE compozy_plan")
    root = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    plan = Plan(statement, [])
    for node in _nodes(root):
        kind = node["Node Type"]
        on = node.get("Relation Name", "")
        plan.lines.append(f"{kind} {on} {node.get('Index Name', '')}".rstrip())
        if "Index Name" in node:
            plan.indexes.add(node["Index Name"])
        if kind == "Seq Scan" and on in TABLES:
            plan.full_scans.append(on)
        if kind in ("Sort", "Incremental Sort"):
            plan.sorts = True
    return plan


def plans_of(store: Store, call: Callable[[], object], table: str) -> list[Plan]:
    """The plans of the statements that ``call`` sends which read ``table``."""
    with record_statements(store) as statements:
        call()
    reads = [
        statement
        for statement in statements
        if re.match(r"\s*(SELECT|WITH)\b", statement, re.IGNORECASE)
        and re.search(rf"\bFROM {table}\b", statement)
    ]
    assert reads, f"{call} sent no SELECT from {table}: {statements}"
    explain = _sqlite_plan if store.driver == "sqlite" else _postgres_plan
    with sql_connection(store) as conn:
        return [explain(conn, statement) for statement in reads]


def the_plan(store: Store, call: Callable[[], object], table: str) -> Plan:
    """The plan of the one statement of ``call`` that reads ``table``."""
    (plan,) = plans_of(store, call, table)
    return plan


def assert_reads(plan: Plan, index: str | set[str], *, ordered: bool) -> None:
    """``plan`` reads ``index`` (or one of a set), scans no table whole and, if ``ordered``,
    sorts nothing."""
    wanted = {index} if isinstance(index, str) else index
    assert wanted & plan.indexes, f"expected index {index}, plan:\n{plan}"
    assert not plan.full_scans, f"full scan of {plan.full_scans}, plan:\n{plan}"
    if ordered:
        assert not plan.sorts, f"{index} should give the order, but the plan sorts:\n{plan}"


# Reading all of an execution's tasks (or a parent's children), PostgreSQL may rightly prefer a
# bitmap scan of either index led by the column and a sort of those rows; SQLite reads the
# index in task order.
BY_EXECUTION = {
    "ix_task_states_workflow_exec_id_created_at",
    "ix_task_states_workflow_exec_id_task_id",
}


@pytest.mark.compozy_dataset("query-plans")
def test_a_workflow_state_reads_its_tasks_through_the_execution_index(
    compozy_dataset: Store,
) -> None:
    store = compozy_dataset
    state = store.workflows.get_state(BUSY[1])
    assert len(state.tasks) == CHILDREN + 1  # what the plan below is for
    plan = the_plan(store, lambda: store.workflows.get_state(BUSY[1]), "task_states")
    if store.driver == "sqlite":
        assert_reads(plan, "ix_task_states_workflow_exec_id_created_at", ordered=True)
    else:
        assert_reads(plan, BY_EXECUTION, ordered=False)


@pytest.mark.compozy_dataset("query-plans")
def test_children_are_read_through_the_parent_index_in_order(compozy_dataset: Store) -> None:
    store = compozy_dataset
    root = f"{BUSY[1]}-root"
    assert len(store.tasks.list_children(root)) == CHILDREN
    plan = the_plan(store, lambda: store.tasks.list_children(root), "task_states")
    assert_reads(
        plan, "ix_task_states_parent_state_id_created_at", ordered=store.driver == "sqlite"
    )


@pytest.mark.compozy_dataset("query-plans")
def test_a_task_tree_walks_the_parent_index_from_the_primary_key(compozy_dataset: Store) -> None:
    store = compozy_dataset
    assert len(store.tasks.get_task_tree("chain-000", max_depth=CHAIN)) == CHAIN
    plan = the_plan(
        store, lambda: store.tasks.get_task_tree("chain-000", max_depth=CHAIN), "task_states"
    )
    # The result is ordered by depth, which no index holds: a sort of the tree's rows is right.
    assert_reads(plan, "ix_task_states_parent_state_id_created_at", ordered=False)
    assert PK[store.driver] in plan.indexes, f"the root is not read by its key:\n{plan}"


@pytest.mark.compozy_dataset("query-plans")
def test_tasks_by_ids_are_looked_up_by_primary_key(compozy_dataset: Store) -> None:
    store = compozy_dataset
    ids = [f"{wf}-{n:03d}" for wf in BUSY[::4] for n in range(1, 40, 3)]
    assert len(store.tasks.list_by_ids(ids)) == len(ids)
    for plan in plans_of(store, lambda: store.tasks.list_by_ids(ids), "task_states"):
        assert_reads(plan, PK[store.driver], ordered=False)


LISTS = {  # filter: (status, workflow_id, the index that gives its rows in page order)
    "none": (None, None, "ix_workflow_states_created_at"),
    "status": (Status.RUNNING, None, "ix_workflow_states_claimable"),
    "workflow_id": (None, "flow-07", "ix_workflow_states_workflow_id_created_at"),
    "both": (Status.FAILED, "flow-03", "ix_workflow_states_workflow_id_status_created_at"),
}


@pytest.mark.compozy_dataset("query-plans")
@pytest.mark.parametrize("deep", [False, True], ids=["first-page", "deep-page"])
@pytest.mark.parametrize("filter_name", list(LISTS))
def test_a_page_of_executions_reads_its_index_in_order_and_sorts_nothing(
    compozy_dataset: Store, filter_name: str, deep: bool
) -> None:
    """The executions list as the API calls it (status and workflow_id filters, keyset cursor):
    a page costs what page 1 costs, whatever the table holds, only if one index gives both the
    filter and the order (created_at, workflow_exec_id)."""
    store = compozy_dataset
    status, workflow_id, index = LISTS[filter_name]
    wanted = WorkflowFilter(status=status, workflow_id=workflow_id)
    cursor = None
    if deep:  # the cursor of the middle of the listing, as a client paging there holds it
        middle = store.workflows.list_states(wanted)
        assert len(middle) >= 15, "the dataset must give this filter several pages"
        half = middle[len(middle) // 2]
        assert half.created_at is not None
        cursor = encode_cursor(half.created_at, half.workflow_exec_id)
    page = store.workflows.list_page(wanted, limit=5, cursor=cursor)
    assert len(page.items) == 5
    assert all(s.status == (status or s.status) for s in page.items)
    plan = the_plan(
        store, lambda: store.workflows.list_page(wanted, limit=5, cursor=cursor), "workflow_states"
    )
    assert_reads(plan, index, ordered=True)


@pytest.mark.compozy_dataset("query-plans")
def test_a_page_counts_its_tasks_through_an_execution_index(compozy_dataset: Store) -> None:
    """The second query of a page (task counts of its executions) reads task_states by
    workflow_exec_id, never the whole table."""
    store = compozy_dataset
    page = store.workflows.list_page(WorkflowFilter(workflow_id="flow-00"), limit=10)
    assert sum(sum(s.task_status_counts.values()) for s in page.items) > 0
    plan = the_plan(
        store,
        lambda: store.workflows.list_page(WorkflowFilter(workflow_id="flow-00"), limit=10),
        "task_states",
    )
    assert_reads(plan, BY_EXECUTION, ordered=False)


def test_revision_0004_builds_these_indexes_and_its_down_restores_the_old_ones(
    compozy_empty_database: TestDatabase,
) -> None:
    """Up to 0004 gives the indexes of tables.py, column for column; down gives back 0003's
    (the migration contract compares index names only, and 0004 keeps most names)."""
    store = compozy_empty_database.open()
    migrations.upgrade(store, "0003")
    with sql_connection(store) as conn:
        at_0003 = schema_names(conn)
    migrations.upgrade(store, "0004")
    with sql_connection(store) as conn:
        at_0004 = schema_names(conn)
    indexes = {table: dict(names["indexes"]) for table, names in at_0004.items()}
    assert indexes["workflow_states"]["ix_workflow_states_workflow_id_status_created_at"] == (
        "workflow_id",
        "status",
        "created_at",
        "workflow_exec_id",
    )
    assert "ix_workflow_states_status" not in indexes["workflow_states"]
    assert indexes["task_states"]["ix_task_states_parent_state_id_created_at"][-1] == "task_exec_id"
    if migrations.revisions()[-1] == "0004":
        assert at_0004 == expected_names()
    migrations.downgrade(store, steps=1)
    with sql_connection(store) as conn:
        assert schema_names(conn) == at_0003

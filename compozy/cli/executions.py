"""``compozy executions list|show|cancel``: read and cancel workflow executions in the database.

These commands talk to the database directly (the same flags as ``compozy migrate``), so they
work whether or not a server runs. ``--json`` prints what the HTTP API answers for the same
request; the tables are for people.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from compozy.api.executions import execution_summary
from compozy.api.models import format_timestamp
from compozy.api.serialize import workflow_detail_out, workflow_page_out, workflow_summary_out
from compozy.cli.runtime import ConfigFlags, config_options, existing_store
from compozy.core import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Status
from compozy.store import Store, TransactionScope
from compozy.task import TaskFilter, TaskState
from compozy.workflow import WorkflowFilter, WorkflowSummary

__all__ = ["cancel", "executions_app", "list_executions", "show"]

executions_app = typer.Typer(
    help="List, show and cancel workflow executions.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

ExecId = Annotated[str, typer.Argument(metavar="ID", help="The workflow execution id.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON, as the HTTP API answers, instead of text.")
]
_COLUMNS = ("ID", "WORKFLOW", "STATUS", "TASKS", "WORKER", "CREATED")


@contextmanager
def _store(flags: ConfigFlags) -> Iterator[Store]:
    with existing_store(flags.load().database) as store:
        yield store


def _print_json(model: BaseModel) -> None:
    typer.echo(json.dumps(model.model_dump(mode="json"), indent=2, ensure_ascii=False))


def _when(value: datetime | None) -> str:
    return "-" if value is None else format_timestamp(value)


def _status(summary: WorkflowSummary) -> str:
    if summary.cancel_requested_at is not None and not summary.status.is_terminal:
        return f"{summary.status.value} (canceling)"
    return summary.status.value


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


@executions_app.command("list")
@config_options
def list_executions(
    status: Annotated[
        Status | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            case_sensitive=False,
            help=f"Only executions in this status: {', '.join(s.value for s in Status)}.",
        ),
    ] = None,
    workflow: Annotated[
        str | None,
        typer.Option("--workflow", metavar="ID", help="Only executions of this workflow."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            metavar="N",
            min=1,
            max=MAX_PAGE_SIZE,
            help=f"Executions per page (1 to {MAX_PAGE_SIZE}).",
        ),
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        typer.Option(
            "--cursor", metavar="CURSOR", help="Read the page after the one it came from."
        ),
    ] = None,
    as_json: AsJson = False,
    *,
    flags: ConfigFlags,
) -> None:
    """List executions, newest first, a page at a time."""
    with _store(flags) as store:
        page = store.workflows.list_page(
            WorkflowFilter(status=status, workflow_id=workflow), limit=limit, cursor=cursor
        )
    if as_json:
        _print_json(workflow_page_out(page))
    elif not page.items:
        typer.echo("no executions", err=True)
    else:
        rows = [_COLUMNS] + [
            (
                s.workflow_exec_id,
                s.workflow_id,
                _status(s),
                str(s.task_count),
                s.worker_id or "-",
                _when(s.created_at),
            )
            for s in page.items
        ]
        for line in _table(rows):
            typer.echo(line)
    if page.next_cursor is not None and not as_json:
        typer.echo(f"more: run again with --cursor {page.next_cursor}", err=True)


def _print_summary(summary: WorkflowSummary) -> None:
    typer.echo(f"execution: {summary.workflow_exec_id}")
    typer.echo(f"workflow:  {summary.workflow_id}")
    typer.echo(f"status:    {_status(summary)}")
    if summary.worker_id is None:
        typer.echo("worker:    none")
    else:
        typer.echo(f"worker:    {summary.worker_id} (claim {summary.claim_count})")
    if summary.cancel_requested_at is not None:
        typer.echo(f"cancel:    requested at {_when(summary.cancel_requested_at)}")
    typer.echo(f"created:   {_when(summary.created_at)}")
    typer.echo(f"updated:   {_when(summary.updated_at)}")


def _print_tree(tasks: list[TaskState]) -> None:
    typer.echo("tasks:" if tasks else "tasks:     none")
    known = {task.task_exec_id for task in tasks}
    children: dict[str | None, list[TaskState]] = {}
    for task in tasks:  # oldest first, so siblings print in the order they started
        parent = task.parent_state_id if task.parent_state_id in known else None
        children.setdefault(parent, []).append(task)

    def show(task: TaskState, depth: int) -> None:
        typer.echo(
            f"{'  ' * depth}{task.task_id} [{task.execution_type.value}] {task.status.value}"
        )
        for child in children.get(task.task_exec_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 1)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@executions_app.command()
@config_options
def show(
    exec_id: ExecId,
    as_json: AsJson = False,
    *,
    flags: ConfigFlags,
) -> None:
    """Show an execution and its task tree."""
    with _store(flags) as store:
        summary = execution_summary(store.workflows, exec_id)
        tasks = store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id))
    if as_json:
        _print_json(workflow_detail_out(summary, tasks))
        return
    _print_summary(summary)
    typer.echo("input:     " + _dump(summary.input))
    typer.echo("output:    " + _dump(summary.output))
    if summary.error:
        typer.echo("error:     " + _dump(summary.error))
    _print_tree(tasks)


@executions_app.command()
@config_options
def cancel(
    exec_id: ExecId,
    as_json: AsJson = False,
    *,
    flags: ConfigFlags,
) -> None:
    """Cancel an execution: a pending one at once, a running one by its worker."""

    def request(tx: TransactionScope) -> WorkflowSummary:
        tx.queue.request_cancel(exec_id)
        return execution_summary(tx.workflows, exec_id)

    with _store(flags) as store:
        summary = store.run_in_transaction(request)
    if as_json:
        _print_json(workflow_summary_out(summary))
    else:
        _print_summary(summary)
        if summary.error:
            typer.echo("error:     " + json.dumps(summary.error, ensure_ascii=False))
    if not summary.status.is_terminal:
        # A claimed execution's worker sees the request within about a second; an unclaimed
        # RUNNING one (its worker's lease ran out) is stopped by whichever worker claims it.
        owner = f"worker {summary.worker_id}" if summary.worker_id else "the next worker"
        typer.echo(f"{owner} stops it and cancels its unfinished tasks", err=True)

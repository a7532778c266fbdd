"""``compozy run``: execute one workflow in this process, showing progress, then the result."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from compozy.cli.main import silence_stdout
from compozy.cli.runtime import ConfigFlags, config_options, open_runtime
from compozy.cli.serving import EXIT_INTERRUPTED, Stopper
from compozy.core import Status, parse_json
from compozy.errors import ValidationError
from compozy.store import Store
from compozy.task import TaskState
from compozy.workflow import WorkflowState

__all__ = ["run"]

EXIT_FAILED = 1
# On Ctrl-C, how long the run gets to stop at its next task before a running tool is abandoned.
_CANCEL_WAIT = 1.0


def _read_input(text: str) -> str:
    """The JSON that ``--input`` names: itself, ``@FILE``'s content, or stdin for ``-``."""
    if text == "-":
        return sys.stdin.read()
    if not text.startswith("@"):
        return text
    path = Path(text[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"--input {text}: there is no file {path}") from None
    except IsADirectoryError:
        raise ValidationError(f"--input {text}: {path} is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise ValidationError(f"--input {text}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValidationError(f"--input {text}: cannot read {path} ({exc.strerror})") from None


def _parse_input(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    source = "stdin" if text == "-" else text[1:] if text.startswith("@") else None
    what = "--input" if source is None else f"the --input read from {source}"
    # The store's JSON rules (compozy.core): any depth is refused at MAX_JSON_DEPTH, in one line.
    value = parse_json(_read_input(text), what)
    if not isinstance(value, dict):
        raise ValidationError(f'{what} must be a JSON object, such as \'{{"name": "Ada"}}\'')
    return value


class _Progress:
    """Prints each task state change on stderr, naming a child's parent by its task id."""

    def __init__(self) -> None:
        self._task_ids: dict[str, str] = {}

    def __call__(self, task: TaskState) -> None:
        self._task_ids[task.task_exec_id] = task.task_id
        parent = self._task_ids.get(task.parent_state_id or "")
        where = f" (in {parent})" if parent else ""
        typer.echo(f"  {task.status.value:<9} {task.task_id}{where}", err=True)


def _print_tree(store: Store, state: WorkflowState) -> None:
    typer.echo("tasks:")
    top_level = (t for t in state.tasks.values() if t.parent_state_id is None)
    for root in sorted(top_level, key=lambda t: (t.created_at, t.task_exec_id)):
        children: dict[str | None, list[TaskState]] = {}
        for task in store.tasks.get_task_tree(root.task_exec_id)[1:]:
            children.setdefault(task.parent_state_id, []).append(task)
        _show(root, children, 1)


def _show(task: TaskState, children: dict[str | None, list[TaskState]], depth: int) -> None:
    typer.echo(f"{'  ' * depth}{task.task_id} [{task.execution_type.value}] {task.status.value}")
    for child in children.get(task.task_exec_id, []):
        _show(child, children, depth + 1)


@config_options
def run(
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="Workflow to run.")],
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="JSON|@FILE|-",
            help="Execution input, a JSON object: the JSON itself, @FILE to read it from a "
            "file, or - to read it from stdin.",
        ),
    ] = None,
    *,
    flags: ConfigFlags,
) -> None:
    """Run WORKFLOW_ID here and now; exit 0 on SUCCESS, 1 otherwise, 130 on Ctrl-C."""
    payload = _parse_input(input_json)
    config = flags.load()
    with open_runtime(flags.file, config) as runtime:
        engine = runtime.engine
        # Checked before the first progress line, so a user error is the only line printed.
        engine.definition(workflow_id).validate_input(payload)
        exec_id = engine.submit(workflow_id, payload)
        typer.echo(f"running {workflow_id} ({exec_id}) on {runtime.store.describe()}", err=True)
        failure: list[BaseException] = []

        def execute() -> None:
            try:
                engine.execute(exec_id, on_task=_Progress())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failure.append(exc)

        # The run goes on in a thread so that Ctrl-C reaches this one, between tasks or not.
        thread = threading.Thread(target=execute, name="compozy-run", daemon=True)
        stopper = Stopper()
        with stopper.installed():
            thread.start()
            while thread.is_alive() and not stopper.requested.wait(0.1):
                pass
            if stopper.requested.is_set():
                engine.cancel(exec_id, wait=_CANCEL_WAIT)
                typer.echo(f"canceled execution {exec_id}", err=True)
                sys.stderr.flush()
                raise typer.Exit(EXIT_INTERRUPTED)
        if failure:
            raise failure[0]
        state = runtime.store.workflows.get_state(exec_id)
        try:
            typer.echo(f"execution: {state.workflow_exec_id}")
            typer.echo(f"status:    {state.status.value}")
            typer.echo("output:    " + json.dumps(state.output, indent=2, ensure_ascii=False))
            if state.error:
                typer.echo("error:     " + json.dumps(state.error, ensure_ascii=False))
            _print_tree(runtime.store, state)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped reading (`| head -1`); the exit code still tells the outcome.
            silence_stdout()
    if state.status is not Status.SUCCESS:
        raise typer.Exit(EXIT_FAILED)

"""``compozy init``: a SQLite project with its first admin and API key, or nothing at all."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Annotated, Final

import typer

from compozy.auth import User
from compozy.auth.keys import new_api_key
from compozy.config import MEMORY_PATH, load_config
from compozy.config.loader import DEFAULT_CONFIG_FILE
from compozy.errors import CompozyError
from compozy.store import migrations, open_store
from compozy.store.drivers.sqlite import SIDECAR_SUFFIXES

__all__ = ["InitError", "init"]

DATABASE_PATH: Final = ".compozy/compozy.db"
WORKFLOWS_DIR: Final = "workflows"
CONFIG_TEXT: Final = f"""\
# compozy configuration, written by `compozy init`.
# Relative paths are relative to this file. Environment variables (DB_DRIVER, DB_PATH, ...)
# and command-line flags override what is set here.
database:
  driver: sqlite
  path: {DATABASE_PATH}
workflows:
  - {WORKFLOWS_DIR}/*.yaml
"""
EXAMPLE_WORKFLOW: Final = """\
# An example workflow, written by `compozy init`. Run it with: compozy run hello
# or with an input: compozy run hello --input '{"name": "Ada"}'
id: hello
description: Greets someone, then shouts and echoes the greeting at the same time.
input:
  type: object
  properties:
    name: {type: string, minLength: 1}
tasks:
  - id: greet
    tool: format
    with: {template: "Hello, {{ input.name | default('world') }}!"}
  - id: together
    type: parallel
    tasks:
      - id: shout
        tool: format
        with: {template: "{{ tasks.greet.output.text | upper }}"}
      - id: echo
        tool: echo
        with: {greeting: "{{ tasks.greet.output.text }}"}
outputs:
  greeting: "{{ tasks.greet.output.text }}"
  shouted: "{{ tasks.shout.output.text }}"
"""


class InitError(CompozyError):
    """``compozy init`` cannot set up the directory it was given."""


def _outermost_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist: what mkdir -p would add."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    return missing


def _remove(created: list[Path]) -> None:
    """Delete what init created, newest first; best effort, as an error is already on its way."""
    for path in reversed(created):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _make_directory(directory: Path, created: list[Path]) -> None:
    if directory.exists() and not directory.is_dir():
        raise InitError(f"{directory} exists and is not a directory; pass a directory to init")
    missing = _outermost_missing(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitError(
            f"cannot create the directory {directory} ({exc.strerror or exc}); "
            "pass a directory you can write to"
        ) from None
    if missing is not None:
        created.append(missing)


def _write_config(config_path: Path, created: list[Path]) -> None:
    try:
        # Mode "x" refuses to overwrite a file that appeared since the caller checked.
        with config_path.open("x", encoding="utf-8") as file:
            created.append(config_path)
            file.write(CONFIG_TEXT)
    except FileExistsError:
        raise _already_initialised(config_path) from None
    except OSError as exc:
        raise InitError(
            f"cannot write {config_path} ({exc.strerror or exc}); pass a directory you can write to"
        ) from None


def _write_example_workflow(folder: Path, created: list[Path]) -> None:
    missing = _outermost_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if missing is not None:
            created.append(missing)
        example = folder / "hello.yaml"
        with example.open("x", encoding="utf-8") as file:
            created.append(example)
            file.write(EXAMPLE_WORKFLOW)
    except FileExistsError:
        pass  # the user's own hello.yaml stays; compozy run hello uses it
    except OSError as exc:
        raise InitError(
            f"cannot write the example workflow in {folder} ({exc.strerror or exc}); "
            "pass a directory you can write to"
        ) from None


def _already_initialised(config_path: Path) -> InitError:
    return InitError(
        f"{config_path} exists already, so compozy is set up there; "
        "use that configuration, or remove the file to start over"
    )


def _prepare_sqlite_folder(database_path: str | None, created: list[Path]) -> None:
    """Make the database's folder private, and record the files opening the store will create."""
    if database_path is None or database_path == MEMORY_PATH:
        return
    path = Path(database_path)
    missing = _outermost_missing(path.parent)
    try:
        # Owner-only, like the database file: SQLite's -wal and -shm files live here too.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InitError(
            f"cannot create the directory {path.parent} ({exc.strerror or exc}); "
            "pass a directory you can write to"
        ) from None
    finally:
        if missing is not None and (missing.exists() or missing.is_symlink()):
            created.append(missing)
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SIDECAR_SUFFIXES)):
        if not (candidate.exists() or candidate.is_symlink()):
            created.append(candidate)


def init(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Project directory (created if needed).")
    ] = Path("."),
    admin_email: Annotated[
        str, typer.Option("--admin-email", metavar="EMAIL", help="Email of the first admin.")
    ] = "admin@localhost",
) -> None:
    """Set up DIR: a compozy.yaml for SQLite, the database, the first admin and an API key."""
    directory = Path(os.path.abspath(os.path.expanduser(directory)))
    config_path = directory / DEFAULT_CONFIG_FILE
    # Checked before anything is written, so a refused init leaves no trace.
    User(email=admin_email).validate()
    if config_path.exists() or config_path.is_symlink():
        raise _already_initialised(config_path)

    created: list[Path] = []
    try:
        _make_directory(directory, created)
        _write_config(config_path, created)
        _write_example_workflow(directory / WORKFLOWS_DIR, created)
        config = load_config(config_path)
        database = config.database
        if database.driver == "sqlite":
            _prepare_sqlite_folder(database.path, created)
        # Forced on: creating the schema is what init is for, whatever DB_AUTO_MIGRATE says.
        store = open_store(database.model_copy(update={"auto_migrate": True}))
        try:
            with store.transaction() as tx:
                admin = tx.auth.create_initial_admin_if_none(User(email=admin_email))
                key, plaintext = new_api_key(admin.id)
                tx.auth.create_api_key(key)
            revision = migrations.status(store).current
            location = store.describe()
        finally:
            store.close()
    except BaseException:
        _remove(created)
        raise

    typer.echo(f"initialised compozy in {directory}")
    typer.echo(f"config:   {config_path}")
    typer.echo(f"database: {location} (schema at {revision})")
    typer.echo(f"admin:    {admin.email} (user {admin.id})")
    typer.echo(f"api key:  {plaintext}")
    typer.echo("This API key is shown only this once and cannot be recovered; store it safely now.")
    typer.echo(f"next:     cd {directory} && compozy run hello")

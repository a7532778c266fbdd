"""``compozy init``: a project (config, database, first admin and API key), or nothing at all.

The database is SQLite in the project unless the database flags or ``DB_*`` variables name
another; the ``compozy.yaml`` written says what init used. A password that came from the
environment is written as a reference to its variable (``${DB_CONN_STRING}``), never in clear.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import typer

from compozy.auth import AuthRepository, User
from compozy.auth.keys import new_api_key
from compozy.cli.runtime import ConfigFlags, DbConnString, DbDriver, DbPath
from compozy.config import MEMORY_PATH
from compozy.config.loader import DEFAULT_CONFIG_FILE
from compozy.errors import AlreadyBootstrapped, CompozyError
from compozy.store import migrations, open_store
from compozy.store.drivers.sqlite import SIDECAR_SUFFIXES

__all__ = ["InitError", "init"]

DATABASE_PATH: Final = ".compozy/compozy.db"
WORKFLOWS_DIR: Final = "workflows"
CONFIG_HEADER: Final = """\
# compozy configuration, written by `compozy init`.
# Relative paths are relative to this file; ${NAME} is the environment variable NAME.
# Environment variables (DB_DRIVER, DB_PATH, ...) and command-line flags override what is set here.
"""
CONFIG_WORKFLOWS: Final = f"""\
workflows:
  - {WORKFLOWS_DIR}/*.yaml
"""
# PostgreSQL settings init copies from the environment when no connection string is given.
_POSTGRES_PARTS: Final = (
    ("DB_HOST", "host"),
    ("DB_PORT", "port"),
    ("DB_USER", "user"),
    ("DB_NAME", "name"),
    ("DB_SSL_MODE", "ssl_mode"),
)
_PLAIN_SCALAR = re.compile(r"[A-Za-z0-9_./@+-]+")
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


@dataclass
class _DatabaseSection:
    """The ``database:`` settings init writes, and what the user should hear about them."""

    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    secret: bool = False  # the file holds a password: readable by its owner only

    def text(self) -> str:
        lines = [f"  {key}: {_scalar(value)}" for key, value in self.settings.items()]
        return "database:\n" + "".join(f"{line}\n" for line in lines)


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain where that reads back the same, else double-quoted."""
    return value if _PLAIN_SCALAR.fullmatch(value) else json.dumps(value)


def _holds_password(conn_string: str) -> bool:
    """True for a URL with a password, or a libpq ``key=value`` string with ``password=``."""
    try:
        in_url = bool(urlsplit(conn_string).password)
    except ValueError:
        in_url = False
    return in_url or re.search(r"(^|[\s?&;])password\s*=", conn_string) is not None


def _database_section(
    flags: ConfigFlags, directory: Path, environ: Mapping[str, str]
) -> _DatabaseSection:
    """What init writes under ``database:``: the driver the flags or ``DB_DRIVER`` chose
    (SQLite by default), with the settings that locate it."""
    driver = (flags.driver or environ.get("DB_DRIVER") or "sqlite").strip().lower()
    section = _DatabaseSection({"driver": driver})
    if driver == "sqlite":
        section.settings["path"] = _sqlite_path(flags.path or environ.get("DB_PATH"), directory)
    elif driver == "postgres":
        _postgres_settings(flags, environ, section)
    return section


def _sqlite_path(raw: str | None, directory: Path) -> str:
    """The path init writes: the default, or the one given, relative to the project if in it."""
    if not raw:
        return DATABASE_PATH
    if raw == MEMORY_PATH:
        raise InitError(
            "init sets up a database that lasts, and a :memory: one is gone when init exits; "
            "pass a file path with --db-path, or leave it out for the project's own"
        )
    path = Path(os.path.abspath(os.path.expanduser(raw)))  # relative to where init runs
    return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)


def _postgres_settings(
    flags: ConfigFlags, environ: Mapping[str, str], section: _DatabaseSection
) -> None:
    settings = section.settings
    from_env = environ.get("DB_CONN_STRING")
    if flags.conn_string:
        settings["conn_string"] = flags.conn_string
        if _holds_password(flags.conn_string):
            section.secret = True
            section.notes.append(
                "the config holds the password given with --db-conn-string, so only you can "
                "read it; to keep it out of the file, set DB_CONN_STRING and write "
                "conn_string: ${DB_CONN_STRING}"
            )
    elif from_env:
        secret = _holds_password(from_env)
        settings["conn_string"] = _reference("DB_CONN_STRING") if secret else from_env
        if secret:
            section.notes.append(_reference_note("DB_CONN_STRING", "connection string"))
    else:
        for var, setting in _POSTGRES_PARTS:
            if environ.get(var):
                settings[setting] = environ[var]
        if environ.get("DB_PASSWORD"):
            settings["password"] = _reference("DB_PASSWORD")
            section.notes.append(_reference_note("DB_PASSWORD", "password"))


def _reference(var: str) -> str:
    """How the config file names environment variable ``var``."""
    return "${" + var + "}"


def _reference_note(var: str, what: str) -> str:
    return (
        f"the config reads the {what} from ${{{var}}}, not in clear: set {var} wherever "
        "compozy runs with this config"
    )


def _write_config(config_path: Path, database: _DatabaseSection, created: list[Path]) -> None:
    try:
        # Mode "x" refuses to overwrite a file that appeared since the caller checked; a file
        # holding a password is made readable by its owner only before anything is written.
        with config_path.open("x", encoding="utf-8") as file:
            created.append(config_path)
            if database.secret:
                config_path.chmod(0o600)
            file.write(CONFIG_HEADER + database.text() + CONFIG_WORKFLOWS)
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
    db_driver: DbDriver = None,
    db_path: DbPath = None,
    db_conn_string: DbConnString = None,
) -> None:
    """Set up DIR: a compozy.yaml for the database used (SQLite in DIR by default), the
    schema, the first admin and an API key."""
    directory = Path(os.path.abspath(os.path.expanduser(directory)))
    config_path = directory / DEFAULT_CONFIG_FILE
    # Checked before anything is written, so a refused init leaves no trace.
    User(email=admin_email).validate()
    if config_path.exists() or config_path.is_symlink():
        raise _already_initialised(config_path)
    flags = ConfigFlags(None, db_driver, db_path, db_conn_string)
    section = _database_section(flags, directory, os.environ)

    created: list[Path] = []
    try:
        _make_directory(directory, created)
        _write_config(config_path, section, created)
        _write_example_workflow(directory / WORKFLOWS_DIR, created)
        # What the next command will read: the file, the environment, then these flags.
        database = ConfigFlags(str(config_path), db_driver, db_path, db_conn_string).load().database
        if database.driver == "sqlite":
            _prepare_sqlite_folder(database.path, created)
        # Forced on: creating the schema is what init is for, whatever DB_AUTO_MIGRATE says.
        store = open_store(database.model_copy(update={"auto_migrate": True}))
        try:
            location = store.describe()
            with store.transaction() as tx:
                admin = _create_first_admin(tx.auth, admin_email, location)
                key, plaintext = new_api_key(admin.id)
                tx.auth.create_api_key(key)
            revision = migrations.status(store).current
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
    for note in section.notes:
        typer.echo(f"note:     {note}")
    typer.echo(f"next:     cd {directory} && compozy run hello")


def _create_first_admin(auth: AuthRepository, email: str, location: str) -> User:
    try:
        return auth.create_initial_admin_if_none(User(email=email))
    except AlreadyBootstrapped:
        raise InitError(
            f"{location} has an admin already, so it was set up before; init sets up new "
            "databases: point a compozy.yaml at it, and get a key with "
            "`compozy keys create --user EMAIL` (`compozy users list` shows the admins)"
        ) from None

"""Build a Config from defaults < YAML file < environment < overrides (CLI flags)."""

from __future__ import annotations

import functools
import glob
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from compozy.config.messages import Loc, dotted
from compozy.config.models import MEMORY_PATH, Config
from compozy.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_FILE", "ENV_VARS", "OVERRIDES_SOURCE", "find_config_file", "load_config"]

DEFAULT_CONFIG_FILE: Final = "compozy.yaml"
OVERRIDES_SOURCE: Final = "the command-line flags"

# Environment variable -> setting it fills. A new section adds its variables here.
ENV_VARS: Final[Mapping[str, Loc]] = MappingProxyType(
    {
        "DB_DRIVER": ("database", "driver"),
        "DB_PATH": ("database", "path"),
        "DB_CONN_STRING": ("database", "conn_string"),
        "DB_HOST": ("database", "host"),
        "DB_PORT": ("database", "port"),
        "DB_USER": ("database", "user"),
        "DB_PASSWORD": ("database", "password"),
        "DB_NAME": ("database", "name"),
        "DB_SSL_MODE": ("database", "ssl_mode"),
        "DB_AUTO_MIGRATE": ("database", "auto_migrate"),
        "DB_BUSY_TIMEOUT": ("database", "busy_timeout"),
    }
)

_BOOLEAN_WORDS: Final = MappingProxyType(
    {"true": True, "1": True, "yes": True, "on": True}
    | {"false": False, "0": False, "no": False, "off": False}
)


def _env_bool(var: str, raw: str) -> bool:
    try:
        return _BOOLEAN_WORDS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"Environment variable {var} is {raw!r}, which is not a boolean; set it to one of "
            f"{', '.join(_BOOLEAN_WORDS)}."
        ) from None


# Variables whose text pydantic would read too loosely (it also takes "t", "y", ...).
_ENV_CONVERTERS: Final[Mapping[str, Callable[[str, str], Any]]] = MappingProxyType(
    {"DB_AUTO_MIGRATE": _env_bool}
)


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Load and validate the configuration; raise ConfigError saying what to fix.

    `config_file` defaults to the nearest `compozy.yaml` in `cwd` or a folder above it
    (`find_config_file`); `env` defaults to `os.environ`; `overrides` is a nested mapping of
    CLI flags whose None values are ignored.
    """
    base_dir = Path(os.path.abspath(os.getcwd() if cwd is None else cwd))
    merged: dict[str, Any] = {}
    sources: dict[Loc, str] = {}

    file_path = _config_file_path(config_file, base_dir)
    if file_path is not None:
        file_layer = _read_yaml(file_path)
        _expand_references(file_layer, os.environ if env is None else env, file_path)
        # A relative path in a file means "next to this file", wherever compozy runs from.
        _resolve_sqlite_path(file_layer, file_path.parent)
        _resolve_workflow_paths(file_layer, file_path.parent)
        _resolve_knowledge_root(file_layer, file_path.parent)
        _merge(merged, sources, file_layer, lambda _loc: str(file_path))

    env_layer, env_names = _env_layer(os.environ if env is None else env)
    _resolve_sqlite_path(env_layer, base_dir)
    _merge(merged, sources, env_layer, lambda loc: f"environment variable {env_names[loc]}")

    if overrides is not None:
        override_layer = _plain(overrides)
        if not isinstance(override_layer, dict):
            raise ConfigError(
                "The overrides must be a mapping of sections to settings; pass a dict"
            )
        _canonical_keys(override_layer)
        _resolve_sqlite_path(override_layer, base_dir)
        _resolve_workflow_paths(override_layer, base_dir)
        _resolve_knowledge_root(override_layer, base_dir)
        _merge(merged, sources, override_layer, lambda _loc: OVERRIDES_SOURCE)

    knowledge = merged.get("knowledge")
    if isinstance(knowledge, dict) and "root" not in knowledge:
        # Relative sources and vector DB paths mean "next to compozy.yaml" (else: here).
        knowledge["root"] = str(file_path.parent if file_path is not None else base_dir)
    try:
        return Config.from_settings(merged, sources)
    except ConfigError as exc:
        if file_path is not None or any(loc[0] == "database" for loc in sources):
            raise
        # No file and no database setting: most often compozy ran outside a project.
        reason = str(exc)
        raise ConfigError(
            f"no {DEFAULT_CONFIG_FILE} in {base_dir} or any folder above it, so only the "
            "environment and flags configure compozy (run it inside a project that `compozy "
            f"init` made, or pass --config FILE); {reason[:1].lower()}{reason[1:]}"
        ) from None


def find_config_file(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The `compozy.yaml` that a command run in `cwd` (default: the current directory) reads:
    the one in `cwd`, else in the nearest folder above it, as git finds `.git`; None if none.

    The search never goes above a folder that others may write to (world-writable, such as
    /tmp) or that another user owns: a config there could name tools that would run as you.
    """
    folder = Path(os.path.abspath(os.getcwd() if cwd is None else cwd))
    if (folder / DEFAULT_CONFIG_FILE).is_file():
        return folder / DEFAULT_CONFIG_FILE
    for candidate in folder.parents:
        if not _private_to_you(candidate):
            return None
        if (candidate / DEFAULT_CONFIG_FILE).is_file():
            return candidate / DEFAULT_CONFIG_FILE
    return None


def _private_to_you(folder: Path) -> bool:
    """Whether only the current user (or root) can have put files in ``folder``."""
    try:
        info = folder.stat()
    except OSError:
        return False
    if info.st_mode & stat.S_IWOTH:
        return False
    return info.st_uid in (os.getuid(), 0)


def _config_file_path(config_file: str | os.PathLike[str] | None, base_dir: Path) -> Path | None:
    if config_file is None:
        return find_config_file(base_dir)
    path = Path(os.path.abspath(base_dir / os.path.expanduser(config_file)))
    if not path.exists():
        raise ConfigError(
            f"Config file {path} does not exist; create it or pass the path of an existing file."
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not UTF-8 text; save it as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(
            f"Config file {path} cannot be read ({exc.strerror or exc}); check that it is a "
            "readable file."
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # Only the mark and problem: str(exc) quotes the offending line, which may hold a password.
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = f" ({exc.problem})" if exc.problem else ""
        raise ConfigError(
            f"Config file {path} is not valid YAML{at}{problem}; fix the syntax there."
        ) from None
    except yaml.YAMLError:
        raise ConfigError(f"Config file {path} is not valid YAML; fix its syntax.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"Config file {path} holds a {type(loaded).__name__} at the top level, but it must be "
            "a mapping of sections such as 'database:'; put the settings under section keys."
        )
    layer = _plain(loaded)
    assert isinstance(layer, dict)  # _plain keeps a dict a dict
    _canonical_keys(layer)
    return layer


# `${NAME}` in a text value of the config file: environment variable NAME (`$${NAME}` stays
# `${NAME}`), so a file can name a secret (`conn_string: ${DB_CONN_STRING}`) without holding it.
_REFERENCE: Final = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_references(
    node: dict[str, Any] | list[Any], environ: Mapping[str, str], path: Path, loc: Loc = ()
) -> None:
    """Replace each `${NAME}` in the file layer's text values with the variable's value."""
    keys: list[str | int] = list(node) if isinstance(node, dict) else list(range(len(node)))
    for key in keys:
        value = node[key]  # type: ignore[index]
        here: Loc = (*loc, key)
        if isinstance(value, dict | list):
            _expand_references(value, environ, path, here)
        elif isinstance(value, str) and "${" in value:
            expand = functools.partial(_reference, environ=environ, path=path, loc=here)
            node[key] = _REFERENCE.sub(expand, value)  # type: ignore[index]


def _reference(match: re.Match[str], *, environ: Mapping[str, str], path: Path, loc: Loc) -> str:
    escaped, name = match.groups()
    if escaped:
        return "${" + name + "}"
    value = environ.get(name)
    if not value:
        raise ConfigError(
            f"Config file {path} sets {dotted('', loc)} from ${{{name}}}, but the environment "
            f"variable {name} is not set; set it, or write the value in the file."
        )
    return value


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Loc, str]]:
    """The settings named by ENV_VARS, and which variable set each one."""
    layer: dict[str, Any] = {}
    names: dict[Loc, str] = {}
    for var, loc in ENV_VARS.items():
        raw = environ.get(var)
        if not raw:
            continue
        convert = _ENV_CONVERTERS.get(var)
        section = layer
        for part in loc[:-1]:
            section = section.setdefault(str(part), {})
        section[str(loc[-1])] = convert(var, raw) if convert else raw
        names[loc] = var
    return layer, names


def _plain(value: Any) -> Any:
    """Copy a layer into plain dicts and lists with string keys, dropping None (= not set)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _canonical_keys(layer: dict[str, Any]) -> None:
    """Spell `dbname` as `name` so a later layer's `name` overrides an earlier `dbname`."""
    section = layer.get("database")
    if isinstance(section, dict) and "dbname" in section and "name" not in section:
        section["name"] = section.pop("dbname")


def _resolve_sqlite_path(layer: dict[str, Any], base_dir: Path) -> None:
    section = layer.get("database")
    if not isinstance(section, dict):
        return
    raw = section.get("path")
    if not isinstance(raw, str) or not raw.strip() or raw == MEMORY_PATH:
        return
    section["path"] = os.path.abspath(os.path.join(base_dir, os.path.expanduser(raw)))


def _resolve_workflow_paths(layer: dict[str, Any], base_dir: Path) -> None:
    """Make relative workflow files and globs absolute, relative to `base_dir`."""
    raw = layer.get("workflows")
    entries = [raw] if isinstance(raw, str) else raw
    if not isinstance(entries, list):
        return  # the model reports the wrong type
    resolved: list[Any] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            resolved.append(entry)
            continue
        path = os.path.expanduser(entry)
        if not os.path.isabs(path):
            # Escape the folder so that glob characters in its name match literally.
            folder = str(base_dir)
            if any(char in path for char in "*?["):
                folder = glob.escape(folder)
            path = os.path.join(folder, path)
        resolved.append(os.path.normpath(path))
    layer["workflows"] = resolved


def _resolve_knowledge_root(layer: dict[str, Any], base_dir: Path) -> None:
    """Make a relative knowledge.root absolute, relative to `base_dir`."""
    section = layer.get("knowledge")
    if not isinstance(section, dict):
        return
    raw = section.get("root")
    if isinstance(raw, str) and raw.strip():
        section["root"] = os.path.abspath(os.path.join(base_dir, os.path.expanduser(raw)))


def _merge(
    target: dict[str, Any],
    sources: dict[Loc, str],
    layer: Mapping[str, Any],
    source_of: Callable[[Loc], str],
    loc: Loc = (),
) -> None:
    """Deep-merge `layer` into `target` (lists are replaced whole), recording each leaf's source."""
    for key, value in layer.items():
        here = (*loc, key)
        if isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
                _forget(sources, here)
            _merge(target[key], sources, value, source_of, here)
        else:
            target[key] = value
            _forget(sources, here)
            sources[here] = source_of(here)


def _forget(sources: dict[Loc, str], loc: Loc) -> None:
    """Drop the sources recorded at or below `loc`, which a later layer has replaced."""
    for stale in [known for known in sources if known[: len(loc)] == loc]:
        del sources[stale]

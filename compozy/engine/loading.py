"""Reading workflow files: YAML files or globs, each one workflow, ids unique across files."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from compozy.engine.definitions import (
    LOGGER_NAME,
    DefinitionError,
    WorkflowDefinition,
    parse_definition,
)

__all__ = ["load_definition_file", "load_definitions"]


def load_definition_file(path: str | os.PathLike[str]) -> WorkflowDefinition:
    """Read and validate one YAML workflow file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(source, "the workflow file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(source, f"the workflow file cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        hint = ""
        if "{" in text and ("unhashable" in str(exc) or "flow mapping" in str(exc)):
            hint = '; a value that starts with {{ must be quoted, as in "{{ input.x }}"'
        raise DefinitionError(source, f"not valid YAML{at} ({problem}){hint}") from None
    return parse_definition(data, source)


PathsArgument = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def _expand(paths: PathsArgument) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]  # one path, not an iterable of its characters
    files: list[str] = []
    for entry in paths:
        text = os.path.expanduser(os.fspath(entry))
        if any(char in text for char in "*?["):
            matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not matches:
                logging.getLogger(LOGGER_NAME).warning(
                    "The workflow pattern %s matches no file; no workflow is loaded from it.", text
                )
            files.extend(matches)
        else:
            files.append(text)
    # A file matched by two patterns is loaded once, not reported as a duplicate id.
    return list(dict.fromkeys(files))


def load_definitions(paths: PathsArgument) -> dict[str, WorkflowDefinition]:
    """Load every YAML file (or glob) in ``paths``; workflow ids must be unique across files.

    ``paths`` is an iterable of files and globs; a single path is accepted too.
    """
    definitions: dict[str, WorkflowDefinition] = {}
    for file in _expand(paths):
        definition = load_definition_file(file)
        existing = definitions.get(definition.id)
        if existing is not None:
            raise DefinitionError(
                file,
                f"workflow id {definition.id!r} is also defined in {existing.source}; give "
                "every workflow its own id",
            )
        definitions[definition.id] = definition
    return definitions

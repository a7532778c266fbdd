"""Reading workflow files: YAML files or globs, each one workflow, ids unique across files.

``load_definitions`` is strict: the first broken file is an error. ``WorkflowCatalog`` is
what a running engine uses: a broken file is reported (one warning line) and left out while
the others load, and files added, changed or removed are picked up by ``refresh``.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from compozy.engine.definitions import (
    LOGGER_NAME,
    DefinitionError,
    WorkflowDefinition,
    parse_definition,
)

__all__ = ["WorkflowCatalog", "load_definition_file", "load_definitions"]

_log = logging.getLogger(LOGGER_NAME)


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
    except RecursionError:
        raise DefinitionError(source, "not valid YAML (nested too deeply to read)") from None
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


def _expand(paths: PathsArgument, *, warn: bool = True) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]  # one path, not an iterable of its characters
    files: list[str] = []
    for entry in paths:
        text = os.path.expanduser(os.fspath(entry))
        if any(char in text for char in "*?["):
            matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not matches and warn:
                _log.warning(
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


Stamp = tuple[int, int] | None
"""A file's (mtime in ns, size), or None when it cannot be read."""


def _stamp(file: str) -> Stamp:
    try:
        info = os.stat(file)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


@dataclass(frozen=True)
class _File:
    stamp: Stamp
    definition: WorkflowDefinition | None
    problem: DefinitionError | None
    claims: frozenset[str]
    """Workflow ids a broken file would give: the id in it, if readable, and its stem."""


def _claims(file: str) -> frozenset[str]:
    ids = {Path(file).stem}
    try:
        data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        ids.add(data["id"])
    return frozenset(ids)


def _read(file: str, stamp: Stamp) -> _File:
    try:
        return _File(stamp, load_definition_file(file), None, frozenset())
    except DefinitionError as problem:
        return _File(stamp, None, problem, _claims(file))


class WorkflowCatalog:
    """The workflows of a set of files and globs, kept current while a worker runs.

    A file that does not load is reported once (a warning naming the file and the problem,
    again only when it changes) and left out; the other files load. ``refresh`` looks at the
    files again (the globs too, for new files) at most every ``interval`` seconds and re-reads
    those whose modification time or size changed. Definitions are immutable: an execution
    keeps the one it started with. Thread-safe.
    """

    def __init__(self, paths: PathsArgument, *, interval: float = 2.0) -> None:
        self._paths: list[str | os.PathLike[str]] = (
            [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        )
        self.interval = interval
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._definitions: Mapping[str, WorkflowDefinition] = MappingProxyType({})
        self._problems: dict[str, DefinitionError] = {}
        self._reported: dict[str, tuple[Stamp, str]] = {}
        self._checked = -math.inf
        self.refresh(max_age=0.0)

    @property
    def definitions(self) -> Mapping[str, WorkflowDefinition]:
        """The loaded definitions by workflow id (read-only; a new mapping after a change)."""
        return self._definitions

    @property
    def problems(self) -> Mapping[str, DefinitionError]:
        """The files left out, each with why."""
        with self._lock:
            return dict(self._problems)

    def unavailable(self, workflow_id: str) -> DefinitionError | None:
        """Why no workflow ``workflow_id`` is loaded, when a broken file seems to be it (it
        names that id, or is named after it); None otherwise."""
        with self._lock:
            for file, problem in self._problems.items():
                if workflow_id in self._files[file].claims:
                    return problem
        return None

    def refresh(self, *, max_age: float | None = None) -> bool:
        """Look at the files again if the last look is older than ``max_age`` seconds (the
        catalog's ``interval`` by default); True when the definitions changed."""
        age = self.interval if max_age is None else max_age
        with self._lock:
            now = time.monotonic()
            if now - self._checked < age:
                return False
            first = self._checked == -math.inf
            self._checked = now
            files: dict[str, _File] = {}
            for file in _expand(self._paths, warn=first):
                stamp = _stamp(file)
                known = self._files.get(file)
                same = known is not None and stamp is not None and known.stamp == stamp
                files[file] = known if same and known is not None else _read(file, stamp)
            if files == self._files and not first:
                return False
            self._rebuild(files)
            return True

    def _rebuild(self, files: dict[str, _File]) -> None:
        before = self._definitions
        definitions: dict[str, WorkflowDefinition] = {}
        problems: dict[str, DefinitionError] = {}
        for file, entry in files.items():
            definition = entry.definition
            if definition is None:
                assert entry.problem is not None
                problems[file] = entry.problem
                continue
            existing = definitions.get(definition.id)
            if existing is not None:
                problems[file] = DefinitionError(
                    file,
                    f"workflow id {definition.id!r} is also defined in {existing.source}; give "
                    "every workflow its own id",
                )
                continue
            definitions[definition.id] = definition
        self._files = files
        self._problems = problems
        self._definitions = MappingProxyType(definitions)
        for file, problem in problems.items():
            said = (files[file].stamp, str(problem))
            if self._reported.get(file) != said:
                self._reported[file] = said
                where = f"task {problem.task_id!r}: " if problem.task_id else ""
                _log.warning(
                    "Workflow file %s is not loaded: %s%s; the other workflows are.",
                    file,
                    where,
                    problem.problem,
                )
        for file in set(self._reported) - set(problems):
            del self._reported[file]
        if before:
            self._log_changes(before, definitions)

    @staticmethod
    def _log_changes(
        before: Mapping[str, WorkflowDefinition], after: Mapping[str, WorkflowDefinition]
    ) -> None:
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        changed = sorted(k for k in after.keys() & before.keys() if after[k] != before[k])
        for verb, ids in (("loaded", added), ("reloaded", changed), ("unloaded", removed)):
            if ids:
                _log.info("Workflow files changed: %s %s", verb, ", ".join(ids))

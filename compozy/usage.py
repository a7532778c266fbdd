"""Token usage of LLM calls and how usage from several calls merges. No I/O."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from compozy.core.values import (
    check_optional_timestamp,
    check_text,
    format_timestamp,
    read_timestamp,
)
from compozy.errors import ValidationError

__all__ = ["UsageEntry", "UsageSummary"]

_SOURCES = ("task", "workflow", "")
_COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens")
_OPTIONAL_COUNTERS = (
    "reasoning_tokens",
    "cached_prompt_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"usage {name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValidationError(f"usage {name} is {value}; token counts cannot be negative")
    return value


def _format_time(value: datetime | None, name: str) -> str | None:
    return None if value is None else format_timestamp(value, f"usage {name}")


# Before the one formatter, usage JSON was written with strftime, whose %Y has no leading zeros
# on glibc: year 5 was stored as "5-01-01T...Z". Such text is still read (as UTC, which it was).
_UNPADDED_YEAR = re.compile(r"([0-9]{1,3})(-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{6}Z)", re.ASCII)


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str) and (old := _UNPADDED_YEAR.fullmatch(value)) is not None:
        value = old[1].zfill(4) + old[2]
    return read_timestamp(value, f"usage {name}")


@dataclass(kw_only=True)
class UsageEntry:
    """Token counts for one (provider, model, source); normalised when built."""

    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None
    agent_ids: list[str] = field(default_factory=list)
    captured_at: datetime | None = None
    updated_at: datetime | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise and check every field; raise ``ValidationError`` naming the bad one."""
        self.provider = check_text(self.provider, "usage provider", allow_empty=True).strip()
        self.model = check_text(self.model, "usage model", allow_empty=True).strip()
        if not self.provider:
            raise ValidationError("usage provider is empty: name the LLM provider, e.g. 'openai'")
        if not self.model:
            raise ValidationError(
                f"usage model is empty for provider {self.provider!r}: name the model"
            )
        for name in _COUNTERS:
            _check_count(getattr(self, name), name)
        for name in _OPTIONAL_COUNTERS:
            value = getattr(self, name)
            if value is not None:
                _check_count(value, name)
        if self.total_tokens == 0:
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        agent_ids: Any = self.agent_ids
        if isinstance(agent_ids, str) or not isinstance(agent_ids, Iterable):
            raise ValidationError("usage agent_ids must be a list of strings")
        ids = {
            check_text(a, "usage agent_ids item", allow_empty=True).strip() for a in self.agent_ids
        }
        self.agent_ids = sorted(ids - {""})
        self.captured_at = check_optional_timestamp(self.captured_at, "usage captured_at")
        self.updated_at = check_optional_timestamp(self.updated_at, "usage updated_at")
        source = check_text(self.source, "usage source", allow_empty=True).strip().lower()
        if source not in _SOURCES:
            raise ValidationError(
                f"usage source is {self.source!r}; allowed values: task, workflow, ''"
            )
        self.source = source

    @property
    def key(self) -> tuple[str, str, str]:
        """Entries with equal keys are summed by a merge (compared case-insensitively)."""
        return (self.provider.casefold(), self.model.casefold(), self.source.casefold())

    def _sort_key(self) -> tuple[str, ...]:
        return (*self.key, self.provider, self.model, self.source)

    def combine(self, other: UsageEntry) -> UsageEntry:
        """Sum two entries with the same key. Sums of two valid entries are valid (counts stay
        whole and non-negative, ids stay ids), so the result is not checked again."""

        def add_optional(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        captured = [t for t in (self.captured_at, other.captured_at) if t is not None]
        updated = [t for t in (self.updated_at, other.updated_at) if t is not None]
        optional: dict[str, Any] = {
            n: add_optional(getattr(self, n), getattr(other, n)) for n in _OPTIONAL_COUNTERS
        }
        combined = copy.copy(self)
        combined.__dict__.update(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            **optional,
            agent_ids=sorted(set(self.agent_ids) | set(other.agent_ids)),
            captured_at=min(captured) if captured else None,
            updated_at=max(updated) if updated else None,
        )
        return combined

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as fixed-width ISO 8601 UTC strings)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _ENTRY_FIELDS}
        data["agent_ids"] = list(self.agent_ids)
        data["captured_at"] = _format_time(self.captured_at, "captured_at")
        data["updated_at"] = _format_time(self.updated_at, "updated_at")
        return data

    @classmethod
    def from_json(cls, data: Any) -> UsageEntry:
        """Build an entry from ``to_json`` output; unknown keys are refused."""
        if not isinstance(data, dict):
            raise ValidationError("a usage entry must be a JSON object")
        known = _KNOWN_KEYS
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"usage entry has unknown keys {unknown}; allowed: {sorted(known)}"
            )
        missing = sorted({"provider", "model"} - set(data))
        if missing:
            raise ValidationError(f"usage entry has no {' or '.join(missing)}; both are required")
        values = dict(data)
        for name in ("captured_at", "updated_at"):
            values[name] = _parse_time(values.get(name), name)
        return cls(**values)


_ENTRY_FIELDS = tuple(f.name for f in fields(UsageEntry))  # in declaration order
_KNOWN_KEYS = frozenset(_ENTRY_FIELDS)
_REQUIRED_KEYS = frozenset({"provider", "model"})
_ENTRY_DEFAULTS: dict[str, Any] = {
    f.name: [] if f.name == "agent_ids" else f.default
    for f in fields(UsageEntry)
    if f.name not in ("provider", "model")
}


@dataclass(kw_only=True)
class UsageSummary:
    """A list of usage entries, one per key, sorted by (provider, model, source)."""

    entries: list[UsageEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and re-normalise every entry (entries are mutable after construction)."""
        if not isinstance(self.entries, list):
            raise ValidationError("usage entries must be a list of UsageEntry")
        for entry in self.entries:
            if not isinstance(entry, UsageEntry):
                raise ValidationError(
                    f"usage entries must be UsageEntry, got {type(entry).__name__}"
                )
            entry.validate()
        self.entries = _merge_entries(self.entries)

    def is_empty(self) -> bool:
        """True when there is no entry."""
        return not self.entries

    def merge(self, other: UsageSummary | None) -> UsageSummary:
        """Return a new summary holding both; entries with equal keys are summed."""
        if other is None:
            return UsageSummary(entries=list(self.entries))
        return UsageSummary(entries=[*self.entries, *other.entries])

    def to_json(self) -> list[dict[str, Any]]:
        """The bare JSON array that the ``usage`` column stores."""
        return [entry.to_json() for entry in self.entries]

    @classmethod
    def from_json(cls, data: Any) -> UsageSummary:
        """Build a summary from the stored JSON array."""
        if not isinstance(data, list):
            raise ValidationError("stored usage must be a JSON array of entries")
        # Each entry checked itself when it was built.
        return cls.of_checked([UsageEntry.from_json(item) for item in data])

    @classmethod
    def from_stored(cls, data: Any) -> UsageSummary:
        """A summary from the JSON the store wrote (``to_json`` of validated entries), built
        without checking every field again; anything else goes through ``from_json``."""
        if not isinstance(data, list) or not all(
            isinstance(item, dict)
            and _KNOWN_KEYS.issuperset(item)
            and item.keys() >= _REQUIRED_KEYS
            for item in data
        ):
            return cls.from_json(data)
        entries = []
        for item in data:
            entry = UsageEntry.__new__(UsageEntry)
            values = {**_ENTRY_DEFAULTS, **item}
            values["agent_ids"] = list(values["agent_ids"])
            for name in ("captured_at", "updated_at"):
                values[name] = _parse_time(values[name], name)
            entry.__dict__.update(values)
            entries.append(entry)
        return cls.of_checked(entries)

    @classmethod
    def of_checked(cls, entries: list[UsageEntry]) -> UsageSummary:
        """A summary of entries that were validated and not changed since (merged by key),
        without checking each one again: for the store's hot path."""
        summary = cls.__new__(cls)
        summary.entries = _merge_entries(entries)
        return summary


def _merge_entries(entries: Iterable[UsageEntry]) -> list[UsageEntry]:
    merged: dict[tuple[str, str, str], UsageEntry] = {}
    for entry in entries:
        existing = merged.get(entry.key)
        merged[entry.key] = entry if existing is None else existing.combine(entry)
    return sorted(merged.values(), key=UsageEntry._sort_key)

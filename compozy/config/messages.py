"""Turn a pydantic ValidationError into a one-sentence ConfigError.

pydantic's own text lists every error with its raw input, which would print passwords and
speaks of "Input" rather than of the setting the user wrote. Here each error becomes a sentence
that names the dotted setting, the offending value (never for secret fields), where the value
came from when the loader knows it, and what to do.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from compozy.errors import ConfigError

__all__ = [
    "SECRET_FIELDS",
    "SENTENCE_ERROR",
    "VALUE_ERROR",
    "Loc",
    "config_error",
    "dotted",
]

Loc = tuple[str | int, ...]

# Error types raised by our own validators. A SENTENCE_ERROR message is already the whole
# sentence; a VALUE_ERROR message is a predicate ("should be ...") about one field.
SENTENCE_ERROR = "compozy_config"
VALUE_ERROR = "compozy_value"

# Fields whose values are never echoed back, whatever the error.
SECRET_FIELDS = frozenset({"conn_string", "password", "dsn", "url", "api_key_env"})

_MAX_SHOWN = 60


def dotted(section: str, loc: Sequence[str | int]) -> str:
    """Render a location as the user writes it: `knowledge.vector_dbs[0].id`."""
    text = section
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else part
    return text or "the configuration"


def config_error(
    exc: ValidationError,
    model: type[BaseModel],
    section: str = "",
    sources: Mapping[Loc, str] | None = None,
) -> ConfigError:
    """Build the ConfigError for the first problem in `exc` (validated as `model` at `section`)."""
    errors = exc.errors(include_url=False, include_context=True, include_input=True)
    if not errors:  # pragma: no cover - pydantic never raises an empty ValidationError
        return ConfigError(f"{section or 'The configuration'} is invalid; check its settings.")
    return ConfigError(_describe(errors[0], model, section, sources or {}))


def _describe(
    err: ErrorDetails, model: type[BaseModel], section: str, sources: Mapping[Loc, str]
) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    if kind == SENTENCE_ERROR:
        return err["msg"]
    name = dotted(section, loc)
    source = _source_for(loc, sources)
    where = f" in {source}" if source else ""
    if kind == "extra_forbidden":
        return (
            f"{name}{where} is not a known setting; remove it or fix its name"
            f"{_known_settings_hint(model, section, loc)}."
        )
    allowed = _literal_values(model, loc)
    if kind == "missing":
        choices = f" (one of: {', '.join(allowed)})" if allowed else ""
        return f"{name} is required but not set{where}; add it{choices}."
    shown = _shown_value(model, loc, err)
    if kind == "literal_error" and allowed:
        value = f" is {shown}" if shown else " has a value that is not allowed"
        origin = f" (from {source})" if source else ""
        return (
            f"{name}{value}{origin}, but the allowed values are {', '.join(allowed)}; "
            f"set it to one of them."
        )
    details = [f"got {shown}" if shown else "value hidden"]
    if source:
        details.append(f"from {source}")
    return f"{name} {_problem(err)} ({' '.join(details)}); change it to a valid value."


def _problem(err: ErrorDetails) -> str:
    msg = err["msg"]
    if err["type"] == VALUE_ERROR:
        return msg
    for prefix in ("Input ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
            return msg if prefix == "Input " else f"is invalid: {msg}"
    return f"is invalid: {msg[:1].lower()}{msg[1:]}"


def _shown_value(model: type[BaseModel], loc: Loc, err: ErrorDetails) -> str | None:
    """The offending input as repr text, or None when it must not or cannot be shown."""
    field = next((part for part in reversed(loc) if isinstance(part, str)), None)
    value = err.get("input")
    if field in SECRET_FIELDS or not isinstance(value, str | int | float | bool):
        return None
    # A scalar given where a section belongs may be anything, a connection string included.
    annotation = _annotation_at(model, loc)
    if annotation is _UNKNOWN or _is_model(annotation) or get_origin(annotation) in (list, dict):
        return None
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[: _MAX_SHOWN - 3]}..."


def _source_for(loc: Loc, sources: Mapping[Loc, str]) -> str | None:
    """Where the value at `loc` came from: the longest recorded prefix wins."""
    for end in range(len(loc), 0, -1):
        found = sources.get(loc[:end])
        if found is not None:
            return found
    return None


def _known_settings_hint(model: type[BaseModel], section: str, loc: Loc) -> str:
    owner = _model_at(model, loc[:-1])
    if owner is None or not loc or not isinstance(loc[-1], str):
        return ""
    known = list(owner.model_fields)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {dotted(section, (*loc[:-1], close[0]))}?)"
    return f" (known settings here: {', '.join(known)})"


def _literal_values(model: type[BaseModel], loc: Loc) -> list[str]:
    annotation = _annotation_at(model, loc)
    if get_origin(annotation) is Literal:
        return [str(value) for value in get_args(annotation)]
    return []


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    annotation = _annotation_at(model, loc)
    return annotation if _is_model(annotation) else None


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


_UNKNOWN: Any = object()


def _annotation_at(model: type[BaseModel], loc: Loc) -> Any:
    """Follow `loc` through nested models and lists to the type declared there, or _UNKNOWN."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            args = get_args(current)
            if get_origin(current) is not list or not args:
                return _UNKNOWN
            current = _strip_optional(args[0])
            continue
        if not _is_model(current):
            return _UNKNOWN
        info = _field_named(current, part)
        if info is None:
            return _UNKNOWN
        current = _strip_optional(info.annotation)
    return current


def _field_named(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field called `key`, or accepting `key` as an alias (pydantic reports aliases)."""
    if key in model.model_fields:
        return model.model_fields[key]
    for info in model.model_fields.values():
        alias = info.validation_alias
        if alias == key or (isinstance(alias, AliasChoices) and key in alias.choices):
            return info
    return None


def _strip_optional(annotation: Any) -> Any:
    """`X | None` -> X and `Annotated[X, ...]` -> X, so the real type can be inspected."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _strip_optional(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _strip_optional(members[0])
    return annotation

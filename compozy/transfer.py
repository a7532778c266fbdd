"""Move a project's data between databases: ``export_data``, ``import_data`` and ``backup``.

The export format (docs/moving-data.md) is JSON Lines, UTF-8, optionally gzip-compressed:

- line 1, the header: ``format``, ``format_version``, ``compozy_version``, the source
  ``driver``, its ``schema_revision``, ``created_at`` and, per table in insert order, its
  ``columns`` and ``rows``;
- one line per row, ``{"row": {...}, "table": "users"}``, tables in the header's order, a
  task's parent before the task;
- the last line, the trailer: per table ``rows`` and ``sha256``.

A row is written in its canonical form: keys sorted, compact JSON, timestamps in compozy's
fixed-width UTC text, bytes in base64. A table's checksum is the sum (mod 2**256) of the
SHA-256 of each row's canonical text, so it does not depend on the order the rows came in:
the same data gives the same checksum whichever database it was read from.

``compozy export``, ``compozy import`` and ``compozy backup`` are thin shells over these.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, cast

from compozy import __version__
from compozy.core.values import (
    check_id,
    check_json,
    check_text,
    format_timestamp,
    parse_timestamp,
)
from compozy.errors import CompozyError, ValidationError
from compozy.store import Store, bulk, migrations

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Progress",
    "Reader",
    "TableSummary",
    "TransferSummary",
    "Writer",
    "backup",
    "export_data",
    "import_data",
    "open_input",
    "open_output",
]

FORMAT = "compozy-export"
FORMAT_VERSION = 1
"""The version of the export format this compozy writes and reads."""

Progress = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_done, rows_in_table)`` after each batch."""


class Writer(Protocol):
    """Where an export goes: a binary file, stdout's buffer, a ``gzip.GzipFile``."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class Reader(Protocol):
    """What an import reads: a binary stream read line by line."""

    def readline(self, size: int = -1, /) -> bytes: ...


_GZIP_MAGIC = b"\x1f\x8b"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # an INTEGER column on PostgreSQL
_MODULUS = 2**256


@dataclass(frozen=True)
class TableSummary:
    """One table of an export: its rows and their checksum."""

    rows: int
    sha256: str


@dataclass(frozen=True)
class TransferSummary:
    """What an export wrote or an import read (and, unless a dry run, wrote)."""

    driver: str
    """The source database's driver (from the export's header, for an import)."""
    revision: str
    """The schema revision of the data."""
    tables: dict[str, TableSummary]

    @property
    def rows(self) -> int:
        """Rows in every table together."""
        return sum(t.rows for t in self.tables.values())


@dataclass
class _Sum:
    rows: int = 0
    total: int = 0

    def add(self, canonical: str) -> None:
        self.rows += 1
        digest = hashlib.sha256(canonical.encode("utf-8")).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % _MODULUS

    def summary(self) -> TableSummary:
        return TableSummary(self.rows, f"{self.total:064x}")


# --- the canonical form of a row -------------------------------------------------------------


def _canonical(row: Mapping[str, Any]) -> str:
    text = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if "-0.0" in text:  # a JSON -0.0, which PostgreSQL's numeric reads back as 0.0 (or a string)
        text = json.dumps(
            _no_negative_zero(row), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
    return text


def _no_negative_zero(value: Any) -> Any:
    if isinstance(value, float) and value == 0.0:
        return 0.0
    if isinstance(value, dict):
        return {k: _no_negative_zero(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_negative_zero(v) for v in value]
    return value


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "timestamp":
        return format_timestamp(value)
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    return value


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _decode(column: bulk.Column, value: Any) -> Any:
    """The Python value of one exported value; ``ValidationError`` naming the column."""
    name, kind = column.name, column.kind
    if value is None:
        if not column.nullable:
            raise ValidationError(f"{name} is null; it needs a value")
        return None
    if kind == "json":
        return check_json(value, name)  # what a repository write would refuse, refused here
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{name} is {_json_type(value)}; it must be a whole number")
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(f"{name} is {value}, outside the column's range of whole numbers")
        return value
    if not isinstance(value, str):
        raise ValidationError(f"{name} is {_json_type(value)}; it must be a string")
    if kind == "id":
        return check_id(value, name)
    if kind == "text":
        return check_text(value, name)
    if kind == "timestamp":
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise ValidationError(f"{name}: {exc}") from None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValidationError(f"{name} is not base64 text") from None


# --- export ----------------------------------------------------------------------------------


def export_data(store: Store, out: Writer, *, progress: Progress | None = None) -> TransferSummary:
    """Write every row of ``store`` to ``out`` as one export, from one consistent snapshot."""
    sums = {table: _Sum() for table in bulk.TABLE_ORDER}
    with bulk.snapshot(store) as snap:
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "compozy_version": __version__,
            "driver": store.driver,
            "schema_revision": snap.revision,
            "created_at": format_timestamp(datetime.now(UTC)),
            "tables": [
                {"name": t, "columns": [c.name for c in snap.columns[t]], "rows": snap.counts[t]}
                for t in bulk.TABLE_ORDER
            ],
        }
        out.write(_line(header))
        for table in bulk.TABLE_ORDER:
            columns = snap.columns[table]
            prefix = '{"row":'
            suffix = f',"table":{json.dumps(table)}}}\n'
            for batch in snap.rows(table):
                lines = []
                for row in batch:
                    text = _canonical({c.name: _encode(c.kind, row[c.name]) for c in columns})
                    sums[table].add(text)
                    lines.append(prefix + text + suffix)
                out.write("".join(lines).encode("utf-8"))
                if progress is not None:
                    progress(table, sums[table].rows, snap.counts[table])
        tables = {table: s.summary() for table, s in sums.items()}
        out.write(
            _line({"trailer": {t: {"rows": s.rows, "sha256": s.sha256} for t, s in tables.items()}})
        )
        out.flush()
        return TransferSummary(store.driver, snap.revision, tables)


def _line(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


# --- import ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _Lines:
    """The lines of an export as JSON objects, each with its number; errors name the line."""

    def __init__(self, stream: Reader) -> None:
        self._stream = stream
        self.number = 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        while True:
            raw = self._read()
            if not raw:
                return
            self.number += 1
            yield self.number, self._parse(raw)

    def _read(self) -> bytes:
        try:
            return self._stream.readline()
        except (OSError, EOFError, zlib.error) as exc:
            raise ValidationError(
                f"line {self.number + 1}: the gzip stream is damaged or cut short ({exc}); "
                "nothing was imported"
            ) from None

    def _parse(self, raw: bytes) -> dict[str, Any]:
        where = f"line {self.number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"{where}: not valid UTF-8 (byte {exc.start + 1} of the line); an export is "
                "UTF-8 text"
            ) from None
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValidationError(f"{where}: not a JSON object ({exc})") from None
        except RecursionError:
            raise ValidationError(f"{where}: nested too deeply to be a row of an export") from None
        if not isinstance(value, dict):
            raise ValidationError(f"{where}: not a JSON object")
        return value


@dataclass(frozen=True)
class _Header:
    driver: str
    revision: str
    columns: dict[str, list[str]]
    rows: dict[str, int]


def _header(lines: _Lines) -> _Header:
    first = next(iter(lines), None)
    if first is None:
        raise ValidationError("the input is empty: expected an export written by `compozy export`")
    _, header = first
    where = "line 1 (header)"
    if header.get("format") != FORMAT:
        raise ValidationError(f'{where}: not a compozy export (no "format": "{FORMAT}")')
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        newer = (
            isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        )
        hint = "upgrade compozy where you import" if newer else "it is not one compozy writes"
        raise ValidationError(
            f"{where}: format version {version!r}; this compozy ({__version__}) reads version "
            f"{FORMAT_VERSION}: {hint}"
        )
    revision = header.get("schema_revision")
    if revision not in migrations.revisions():
        raise ValidationError(
            f"{where}: the export is at schema revision {revision!r}, which this compozy "
            f"({__version__}, revisions {', '.join(migrations.revisions())}) does not know: "
            "import it with the compozy version that exported it, or a newer one"
        )
    tables = header.get("tables")
    try:
        assert isinstance(tables, list)
        columns = {t["name"]: list(t["columns"]) for t in tables}
        rows = {t["name"]: t["rows"] for t in tables}
        assert all(isinstance(n, int) and not isinstance(n, bool) for n in rows.values())
    except (AssertionError, KeyError, TypeError):
        raise ValidationError(
            f'{where}: "tables" must list each table\'s name, columns and rows'
        ) from None
    if sorted(columns) != sorted(bulk.TABLE_ORDER):
        raise ValidationError(
            f"{where}: the tables are {', '.join(columns) or 'none'}; an export has "
            f"{', '.join(bulk.TABLE_ORDER)}"
        )
    return _Header(str(header.get("driver")), revision, columns, rows)


@dataclass
class _Batch:
    loader: bulk.Loader
    progress: Progress | None
    expected: dict[str, int]
    table: str = ""
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, line: int, row: dict[str, Any]) -> None:
        if table != self.table or len(self.rows) >= bulk.BATCH_SIZE:
            self.flush()
            self.table = table
        self.rows.append((line, row))

    def flush(self) -> None:
        if not self.rows:
            return
        self.loader.insert(self.table, self.rows)
        self.done[self.table] = self.done.get(self.table, 0) + len(self.rows)
        self.rows = []
        if self.progress is not None:
            self.progress(self.table, self.done[self.table], self.expected[self.table])


def import_data(
    store: Store,
    source: Reader,
    *,
    replace: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> TransferSummary:
    """Import one export from ``source`` into ``store`` in one transaction.

    An empty target is first moved to the export's schema revision (in the same transaction);
    one that holds rows is refused unless ``replace``, which deletes them (and then needs the
    target at the export's revision). Rows, counts and checksums are checked before commit;
    any error raises ``ValidationError`` naming the line and table, and leaves the target as
    it was. ``dry_run`` does all of it and rolls back.
    """
    lines = _Lines(source)
    header = _header(lines)
    sums = {table: _Sum() for table in bulk.TABLE_ORDER}
    with bulk.load(store, revision=header.revision, replace=replace, commit=not dry_run) as loader:
        for table, names in header.columns.items():
            have = [c.name for c in loader.columns[table]]
            if sorted(names) != sorted(have):
                raise ValidationError(
                    f"line 1 (header): {table} has columns {', '.join(names)}, but at schema "
                    f"revision {header.revision} it has {', '.join(have)}"
                )
        columns = {t: {c.name: c for c in cs} for t, cs in loader.columns.items()}
        batch = _Batch(loader, progress, header.rows)
        trailer: tuple[int, Any] | None = None
        for number, record in lines:
            if "trailer" in record:
                trailer = number, record["trailer"]
                break
            table, row = _row(number, record, columns)
            sums[table].add(_canonical(record["row"]))  # its values were checked by _row
            batch.add(table, number, row)
        if trailer is None:
            raise ValidationError(
                f"the input ends after line {lines.number} without its trailer: the export was "
                "cut short; nothing was imported"
            )
        batch.flush()
        for number, _ in lines:
            raise ValidationError(
                f"line {number}: more lines follow the trailer of line {trailer[0]}"
            )
        tables = _verify(trailer, sums, header, loader)
    return TransferSummary(header.driver, header.revision, tables)


def _row(
    number: int, record: dict[str, Any], columns: dict[str, dict[str, bulk.Column]]
) -> tuple[str, dict[str, Any]]:
    table, row = record.get("table"), record.get("row")
    if table not in columns:
        raise ValidationError(
            f"line {number}: table {table!r} is not one of {', '.join(bulk.TABLE_ORDER)}"
        )
    where = f"line {number} ({table})"
    if not isinstance(row, dict):
        raise ValidationError(f'{where}: "row" must be a JSON object')
    known = columns[table]
    if row.keys() != known.keys():
        missing = sorted(known.keys() - row.keys())
        extra = sorted(row.keys() - known.keys())
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise ValidationError(f"{where}: the row's columns do not match the table ({what})")
    try:
        return table, {name: _decode(known[name], value) for name, value in row.items()}
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None


def _verify(
    trailer: tuple[int, Any], sums: dict[str, _Sum], header: _Header, loader: bulk.Loader
) -> dict[str, TableSummary]:
    number, written = trailer
    if not isinstance(written, dict) or sorted(written) != sorted(bulk.TABLE_ORDER):
        raise ValidationError(f"line {number} (trailer): it must give rows and sha256 per table")
    tables = {}
    for table in bulk.TABLE_ORDER:
        got = sums[table].summary()
        said = written[table]
        where = f"line {number} (trailer, {table})"
        if not isinstance(said, dict) or said.get("rows") != got.rows:
            rows = said.get("rows") if isinstance(said, dict) else said
            raise ValidationError(
                f"{where}: the trailer says {rows!r} rows but the file holds {got.rows}: "
                "rows were added or removed; export again"
            )
        if said.get("sha256") != got.sha256:
            raise ValidationError(
                f"{where}: the checksum does not match the rows: a row was edited or damaged "
                "after the export; export again"
            )
        if header.rows[table] != got.rows:
            raise ValidationError(
                f"{where}: the header announced {header.rows[table]} rows but {got.rows} came"
            )
        stored = loader.count(table)
        if stored != got.rows:  # pragma: no cover - every row went through one insert
            raise CompozyError(f"{table}: {got.rows} rows read but {stored} in the target")
        tables[table] = got
    return tables


# --- files -----------------------------------------------------------------------------------


@contextlib.contextmanager
def open_output(
    path: str | None, *, force: bool = False, protected: Iterable[Path] = ()
) -> Iterator[Writer]:
    """Where an export goes: stdout for None or ``-``; else a new file (mode 0600, gzip when
    the name ends in ``.gz``) that appears under its name only once it is complete. An existing
    file is replaced only with ``force``, and never one of ``protected`` (the database's own)."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    target = _new_file(path, "--output", force=force)
    if any(target.resolve() == p.resolve() for p in protected):
        raise ValidationError(f"{target} is a file of the database being exported; choose another")
    partial = _partial(target)
    try:
        with open(partial, "wb") as raw:
            if target.name.endswith(".gz"):
                with gzip.GzipFile(
                    filename=target.name[:-3], mode="wb", fileobj=raw, compresslevel=6
                ) as zipped:
                    yield zipped
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_input(path: str | None) -> Iterator[Reader]:
    """What an import reads: stdin for None or ``-``, else the file; gzip is recognised by its
    first bytes, whatever the name."""
    if path is None or path == "-":
        yield _maybe_gzip(sys.stdin.buffer, "stdin")
        return
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    with raw:
        yield _maybe_gzip(raw, path)


def _maybe_gzip(stream: IO[bytes], name: str) -> Reader:
    buffered = (
        stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream))
    )
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if name.endswith(".gz"):
        raise ValidationError(f"{name} ends in .gz but is not a gzip file")
    return buffered


def _new_file(path: str | Path, what: str, *, force: bool | None = None) -> Path:
    """``path`` as the name of a file to write: refused when empty, a folder, in a missing
    folder, or an existing file without ``force`` (None: no --force is offered)."""
    if not str(path).strip():
        raise ValidationError(f"{what} is empty: give a file name")
    target = Path(path)
    if target.is_dir():
        raise ValidationError(f"{target} is a folder: give {what} a file name")
    if not target.parent.is_dir():
        raise ValidationError(f"{target.parent} is not a folder: create it first")
    if target.exists() and not force:
        offer = "" if force is None else ", or pass --force to replace it"
        raise ValidationError(f"{target} exists already: choose a new name{offer}")
    return target


def _partial(target: Path) -> Path:
    """A new hidden file beside ``target``, mode 0600 (an export holds emails and key hashes),
    under a name of its own, so two writers of one target never share it."""
    try:
        handle, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise ValidationError(f"cannot write in {target.parent}: {exc.strerror}") from None
    os.close(handle)
    return Path(name)


def backup(store: Store, dest: str | Path) -> Path:
    """A consistent copy of ``store``'s SQLite database in the new file ``dest`` (mode 0600),
    taken while others keep using it; ``ValidationError`` for PostgreSQL, which has pg_dump."""
    target = _new_file(dest, "the backup")
    partial = _partial(target)
    try:
        store.backup(partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target

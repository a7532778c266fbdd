"""Ingestion: the files of a knowledge base, cut into chunks, embedded and stored.

- Sources are files (``path``) and globs (``glob``, ``**`` included) of ``.md``, ``.markdown``
  and ``.txt`` files, relative to ``knowledge.root``. A chunk's ``source`` is the file's path
  relative to the root (with ``/``), or its absolute path when it is outside the root.
- Chunks are at most ``size`` characters and start with up to ``overlap`` characters of the
  previous one; a cut is made at a paragraph break if one is in the second half of the window,
  else at a sentence end, a line end or a space.
- A chunk's id is sha256(kb id, text)[:32 hex]: identical texts are one record in a knowledge
  base (dedupe by content), owned by the first file (in path order) that has it.
- What was ingested is kept in the vector store itself, in one manifest record per knowledge
  base (id ``compozy-manifest:<kb>``, metadata ``kind: manifest``): each file's fingerprint
  (sha256 of its bytes) and its chunk ids. Re-ingesting reads every file but touches only the
  changed ones: the records a changed or deleted file owned are deleted by the filter
  ``{kb, source}``, the new ones upserted (a vector already stored for the same text is
  reused, not embedded again), and an unchanged knowledge base is not written at all. A change
  of embedder or chunking re-ingests everything.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from compozy.errors import ValidationError
from compozy.knowledge import Metadata, Record, VectorStore

if TYPE_CHECKING:
    from compozy.config import EmbedderConfig, KnowledgeBaseConfig
    from compozy.knowledge.embedders import Embedder

__all__ = [
    "CHUNK",
    "SUFFIXES",
    "Chunk",
    "IngestReport",
    "chunk_id",
    "chunk_spans",
    "chunk_text",
    "file_chunks",
    "headings",
    "ingest",
    "manifest_id",
    "source_files",
]

SUFFIXES: Final = (".md", ".markdown", ".txt")
CHUNK: Final = "chunk"
_MANIFEST: Final = "manifest"
_MANIFEST_VERSION: Final = 1
_UPSERT_BATCH: Final = 256

Progress = Callable[[str], None]


# --- chunking ------------------------------------------------------------------------------------

_SENTENCE_END: Final = re.compile(r"[.!?:;](?=\s)")


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Cut ``text`` into chunks of at most ``size`` characters (stripped, none empty), each
    starting with up to ``overlap`` characters of the previous one."""
    return [chunk for _start, chunk in chunk_spans(text, size, overlap)]


def chunk_spans(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """``chunk_text``'s chunks, each with the offset in ``text`` where it starts."""
    chunks: list[tuple[int, str]] = []
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        end = min(start + size, end_of_text)
        if end < end_of_text:
            end = start + _cut(text[start:end])
        piece = text[start:end]
        chunk = piece.strip()
        if chunk:
            chunks.append((start + len(piece) - len(piece.lstrip()), chunk))
        if end >= end_of_text:
            break
        start = _next_start(text, start, end, overlap)
    return chunks


def _cut(window: str) -> int:
    """Where to end a full window: the last paragraph break, sentence end, line end or space
    in its second half, else its end."""
    half = len(window) // 2
    breaks = [m.end() for m in re.finditer(r"\n\s*\n", window) if m.end() > half]
    if breaks:
        return breaks[-1]
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > half]
    if ends:
        return ends[-1]
    for separator in ("\n", " "):
        found = window.rfind(separator, half)
        if found > half:
            return found + 1
    return len(window)


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """The start of the next chunk: ``overlap`` characters back from ``end``, moved forward to
    the start of a sentence or word, and always after ``start``."""
    if overlap == 0:
        return end
    back = max(end - overlap, start + 1)
    tail = text[back:end]
    sentence = _SENTENCE_END.search(tail)
    if sentence is not None and sentence.end() < len(tail):
        return back + sentence.end()
    space = re.search(r"\s", tail)
    if back > start + 1 and space is not None and space.end() < len(tail):
        return back + space.end()
    return back


_HEADING: Final = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def headings(text: str) -> Callable[[int], str]:
    """For a markdown text: offset -> the title (its first ``#`` heading) and the heading of
    the section the offset is in, as ``Title > Section`` ("" when there is none)."""
    found = [(m.start(), len(m[1]), m[2].strip()) for m in _HEADING.finditer(text)]
    title = next((name for _at, level, name in found if level == 1), "")

    def at(offset: int) -> str:
        section = next(
            (name for start, level, name in reversed(found) if start < offset and level > 1), ""
        )
        return " > ".join(part for part in (title, section) if part)

    return at


@dataclass(frozen=True)
class Chunk:
    """A chunk's text and the headings it sits under (embedded with it, stored apart)."""

    text: str
    heading: str

    @property
    def embedded(self) -> str:
        """What the embedder reads: the headings, then the text. A title says what the text
        under it is about, so its words count twice (a field weight, as BM25F gives titles)."""
        if not self.heading:
            return self.text
        return f"{self.heading}\n{self.heading}\n\n{self.text}"


def file_chunks(name: str, text: str, size: int, overlap: int) -> list[Chunk]:
    """The chunks of one source file; markdown chunks carry their headings."""
    markdown = name.lower().endswith((".md", ".markdown"))
    heading = headings(text) if markdown else (lambda _offset: "")
    return [Chunk(chunk, heading(start)) for start, chunk in chunk_spans(text, size, overlap)]


def chunk_id(kb_id: str, text: str) -> str:
    """The id of a chunk: the same text in the same knowledge base is the same record."""
    return hashlib.sha256(f"{kb_id}\n{text}".encode()).hexdigest()[:32]


def manifest_id(kb_id: str) -> str:
    """The id of the record that holds what a knowledge base ingested."""
    return f"compozy-manifest:{kb_id}"


# --- sources -------------------------------------------------------------------------------------


def source_files(base: KnowledgeBaseConfig, root: str) -> dict[str, Path]:
    """The files of ``base``'s sources, by their ``source`` name, in name order."""
    found: dict[str, Path] = {}
    for source in base.sources:
        if source.path is not None:
            path = Path(root, os.path.expanduser(source.path))
            if not path.is_file():
                raise ValidationError(
                    f"knowledge base {base.id!r}: source {source.path!r} is not a file "
                    f"(looked for {path}); fix knowledge_bases' sources"
                )
            if path.suffix.lower() not in SUFFIXES:
                raise ValidationError(
                    f"knowledge base {base.id!r}: source {source.path!r} is not a "
                    f"{'/'.join(SUFFIXES)} file; only markdown and text files are ingested"
                )
            paths: Iterable[Path] = [path]
        else:
            assert source.glob is not None  # the config has one of the two
            pattern = os.path.join(glob.escape(root), os.path.expanduser(source.glob))
            matched = (Path(p) for p in glob.glob(pattern, recursive=True))
            paths = (p for p in matched if p.suffix.lower() in SUFFIXES and p.is_file())
        for path in paths:
            found[_source_name(path, root)] = path
    return dict(sorted(found.items()))


def _source_name(path: Path, root: str) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return absolute.as_posix()


# --- ingestion -----------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What one ingest did."""

    kb: str
    files: int = 0
    chunks: int = 0
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0
    written: int = 0

    def line(self) -> str:
        """``ingested docs: 12 files, 340 chunks (3 changed)``."""
        removed = f", {len(self.removed)} removed" if self.removed else ""
        return (
            f"ingested {self.kb}: {self.files} files, {self.chunks} chunks "
            f"({len(self.changed)} changed{removed})"
        )


@dataclass
class _File:
    fingerprint: str
    chunks: list[str]


def ingest(
    base: KnowledgeBaseConfig,
    embedder_config: EmbedderConfig,
    embedder: Embedder,
    store: VectorStore,
    root: str,
    progress: Progress | None = None,
) -> IngestReport:
    """Bring ``store`` up to date with ``base``'s files (see the module's description)."""
    say = progress or (lambda _line: None)
    files = source_files(base, root)
    texts = {name: path.read_bytes() for name, path in files.items()}
    signature = {
        "embedder": [embedder_config.provider, embedder_config.model, embedder_config.dimension],
        "chunking": [base.chunking.size, base.chunking.overlap],
    }
    old = _load_manifest(store, base.id, signature)
    if old is None:
        store.delete(where={"kb": base.id})  # a first ingest, or new embedder or chunking
        old = {}
    fingerprints = {name: hashlib.sha256(data).hexdigest() for name, data in texts.items()}
    report = IngestReport(base.id, files=len(files))
    report.changed = [n for n in files if n not in old or old[n].fingerprint != fingerprints[n]]
    report.removed = [name for name in old if name not in files]

    chunked: dict[str, list[Chunk]] = {}

    def chunks_of(name: str) -> list[Chunk]:
        if name not in chunked:
            text = texts[name].decode("utf-8", errors="replace")
            chunked[name] = file_chunks(name, text, base.chunking.size, base.chunking.overlap)
        return chunked[name]

    new = {
        name: old[name]
        if name not in report.changed
        else _File(fingerprints[name], [chunk_id(base.id, c.text) for c in chunks_of(name)])
        for name in files
    }
    owners = _owners(new)
    report.chunks = len(owners)
    if not report.changed and not report.removed:
        say(report.line())
        return report
    old_owners = _owners(old)
    touched = {*report.changed, *report.removed}
    # Every record a touched file owned is deleted below; put back what is still wanted.
    wanted = [
        i
        for i, owner in owners.items()
        if owner in touched or i not in old_owners or old_owners[i] in touched
    ]
    say(f"{base.id}: {len(touched)} files changed, {len(wanted)} chunks to write")
    kept = {record.id: record for record in store.get(wanted)}
    for name in touched:
        store.delete(where={"kb": base.id, "source": name})
    records = list(_records(base.id, wanted, owners, new, chunks_of, kept))
    missing = [index for index, record in enumerate(records) if not record.vector]
    for batch in _batches(missing, _UPSERT_BATCH):
        vectors = embedder.embed([_embedded(records[index]) for index in batch])
        for index, vector in zip(batch, vectors, strict=True):
            records[index] = Record(
                records[index].id, vector, records[index].text, records[index].metadata
            )
        report.embedded += len(batch)
    for batch in _batches(records, _UPSERT_BATCH):
        store.upsert(batch)
        report.written += len(batch)
    _save_manifest(store, base.id, signature, new)
    say(report.line())
    return report


def _embedded(record: Record) -> str:
    return Chunk(record.text, str(record.metadata.get("heading", ""))).embedded


def _owners(files: dict[str, _File]) -> dict[str, str]:
    """chunk id -> the first file (in name order) that has the chunk."""
    owners: dict[str, str] = {}
    for name in sorted(files):
        for chunk in files[name].chunks:
            owners.setdefault(chunk, name)
    return owners


def _records(
    kb_id: str,
    wanted: Sequence[str],
    owners: dict[str, str],
    files: dict[str, _File],
    chunks_of: Callable[[str], list[Chunk]],
    kept: dict[str, Record],
) -> Iterator[Record]:
    positions: dict[str, dict[str, int]] = {}
    for record_id in wanted:
        owner = owners[record_id]
        if owner not in positions:
            # reversed: the first place of a chunk that the file has twice wins
            chunks = files[owner].chunks
            positions[owner] = {c: len(chunks) - 1 - i for i, c in enumerate(reversed(chunks))}
        index = positions[owner][record_id]
        chunk = chunks_of(owner)[index]
        metadata: Metadata = {
            "kb": kb_id,
            "kind": CHUNK,
            "source": owner,
            "chunk_index": index,
            "heading": chunk.heading,
            "content_hash": hashlib.sha256(chunk.text.encode()).hexdigest(),
            "fingerprint": files[owner].fingerprint,
        }
        # The vector stored for this text is reused if it was embedded under the same headings.
        old = kept.get(record_id)
        same = old is not None and old.metadata.get("heading") == chunk.heading
        yield Record(record_id, list(old.vector) if old and same else [], chunk.text, metadata)


def _batches(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _load_manifest(
    store: VectorStore, kb_id: str, signature: dict[str, Any]
) -> dict[str, _File] | None:
    """The files of the last ingest, or None when there was none or it used another
    embedder or chunking (then everything is ingested again)."""
    found = store.get([manifest_id(kb_id)])
    if not found:
        return None
    try:
        manifest = json.loads(found[0].text)
        if manifest["version"] != _MANIFEST_VERSION or manifest["signature"] != signature:
            return None
        return {
            name: _File(str(entry["fingerprint"]), [str(c) for c in entry["chunks"]])
            for name, entry in manifest["files"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: start over


def _save_manifest(
    store: VectorStore, kb_id: str, signature: dict[str, Any], files: dict[str, _File]
) -> None:
    text = json.dumps(
        {
            "version": _MANIFEST_VERSION,
            "signature": signature,
            "files": {
                n: {"fingerprint": f.fingerprint, "chunks": f.chunks} for n, f in files.items()
            },
        },
        separators=(",", ":"),
    )
    # Any unit vector: searches ask for kind "chunk", so the manifest is never a match.
    vector = [1.0] + [0.0] * (store.dimension - 1)
    store.upsert([Record(manifest_id(kb_id), vector, text, {"kb": kb_id, "kind": _MANIFEST})])

"""Chunking, and ingestion into a real filesystem vector store: dedupe, re-ingest of changed
files only, deleted files, a changed chunking."""

from __future__ import annotations

from pathlib import Path

import pytest
from knowledge_support import write_project

from compozy.config import load_config
from compozy.knowledge.bases import KnowledgeBases
from compozy.knowledge.ingest import chunk_text, file_chunks, manifest_id

PROSE = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))


@pytest.mark.parametrize(("size", "overlap"), [(800, 120), (64, 0), (100, 99), (300, 50)])
def test_chunks_are_bounded_overlap_and_cover_the_text(size: int, overlap: int) -> None:
    chunks = chunk_text(PROSE, size, overlap)

    assert all(0 < len(chunk) <= size for chunk in chunks)
    # Every word of the text is in some chunk, in order.
    assert " ".join(chunks).split()[:5] == PROSE.split()[:5]
    assert chunks[-1].endswith("Sentence number 199 talks about topic 3.")
    if overlap:
        # A chunk starts with words the previous one ended with.
        assert chunks[1].split()[0] in chunks[0][-overlap - 20 :]
    assert chunk_text(PROSE, size, overlap) == chunks  # deterministic


def test_chunks_prefer_paragraph_then_sentence_boundaries() -> None:
    text = "First paragraph, short.\n\n" + "A sentence here. " * 30 + "\n\nLast one."

    chunks = chunk_text(text, 200, 0)

    assert chunks[0].endswith("A sentence here.")  # the paragraph break comes too early
    assert all(chunk.endswith(".") for chunk in chunks)


def test_markdown_chunks_carry_their_title_and_section() -> None:
    text = "# Guide\n\nIntro.\n\n## Setup\n\n" + "Install it. " * 40 + "\n\n## Usage\n\nRun it."

    chunks = file_chunks("guide.md", text, 200, 0)

    assert chunks[0].heading == "Guide"
    assert chunks[1].heading == "Guide > Setup"
    assert "## Usage" in chunks[-1].text  # a heading inside a chunk is part of its text
    assert {c.heading for c in file_chunks("guide.txt", text, 200, 0)} == {""}


@pytest.fixture
def bases(tmp_path: Path) -> KnowledgeBases:
    config = load_config(write_project(tmp_path, sources="[{glob: 'notes/*'}]"), env={})
    return KnowledgeBases(config)


def test_ingest_then_query_finds_the_right_file(bases: KnowledgeBases, tmp_path: Path) -> None:
    lines: list[str] = []

    report = bases.ingest("notes", progress=lines.append)

    assert report.files == 3
    assert sorted(report.changed) == ["notes/alpha.md", "notes/beta.md", "notes/extra.txt"]
    assert lines[-1] == f"ingested notes: 3 files, {report.chunks} chunks (3 changed)"
    assert report.embedded == report.written == report.chunks
    store = bases.get("notes").store
    assert store.count(where={"kb": "notes", "kind": "chunk"}) == report.chunks
    best = bases.query("notes", "how to restore a backup of the alpha database", top_k=2)
    assert best[0].metadata["source"] == "notes/alpha.md"
    assert best[0].metadata["heading"] == "Alpha guide"  # one chunk: it starts at the top
    assert best[0].score >= best[1].score
    assert bases.query("notes", "gardening")[0].metadata["source"] == "notes/extra.txt"
    bases.close()


def test_reingest_touches_only_changed_and_deleted_files(
    bases: KnowledgeBases, tmp_path: Path
) -> None:
    first = bases.ingest("notes")
    store = bases.get("notes").store
    before = bases.query("notes", "weather", top_k=50, min_score=-1.0)
    beta_ids = {m.id for m in before if m.metadata["source"] == "notes/beta.md"}
    assert beta_ids

    unchanged = bases.ingest("notes")
    assert (unchanged.changed, unchanged.removed) == ([], [])
    assert unchanged.embedded == unchanged.written == 0

    (tmp_path / "notes" / "beta.md").write_text("# Beta notes\n\nBeta now reads tide tables.\n")
    (tmp_path / "notes" / "extra.txt").unlink()
    lines: list[str] = []
    again = bases.ingest("notes", progress=lines.append)

    assert again.changed == ["notes/beta.md"]
    assert again.removed == ["notes/extra.txt"]
    assert lines[-1].endswith("(1 changed, 1 removed)")
    assert again.written == again.embedded == 1  # beta's one new chunk; alpha untouched
    everything = bases.query("notes", "tide", top_k=50, min_score=-1.0)
    sources = {m.metadata["source"] for m in everything}
    assert sources == {"notes/alpha.md", "notes/beta.md"}
    assert store.get(sorted(beta_ids)) == []  # the old beta chunks are gone
    assert store.count(where={"kb": "notes", "kind": "chunk"}) == first.chunks - 2 + 1
    bases.close()


def test_identical_chunks_are_stored_once_and_survive_their_owner(
    bases: KnowledgeBases, tmp_path: Path
) -> None:
    same = "Shared paragraph that two files contain word for word.\n"
    (tmp_path / "notes" / "a-copy.txt").write_text(same)
    (tmp_path / "notes" / "b-copy.txt").write_text(same)
    config = load_config(write_project(tmp_path, sources="[{glob: 'notes/*.txt'}]"), env={})
    bases = KnowledgeBases(config)

    report = bases.ingest("notes")
    assert report.files == 3
    assert report.chunks == 2  # extra.txt, and the shared paragraph once
    owner = bases.query("notes", "shared paragraph word for word", top_k=1)[0]
    assert owner.metadata["source"] == "notes/a-copy.txt"

    (tmp_path / "notes" / "a-copy.txt").unlink()
    bases.ingest("notes")

    moved = bases.query("notes", "shared paragraph word for word", top_k=1)[0]
    assert moved.id == owner.id
    assert moved.metadata["source"] == "notes/b-copy.txt"
    bases.close()


def test_a_new_chunking_reingests_everything(bases: KnowledgeBases, tmp_path: Path) -> None:
    bases.ingest("notes")
    bases.close()
    config = write_project(tmp_path)
    config.write_text(
        config.read_text().replace("sources:", "chunking: {size: 64, overlap: 0}, sources:")
    )

    with KnowledgeBases(load_config(config, env={})) as smaller:
        report = smaller.ingest("notes")
        store = smaller.get("notes").store

        assert len(report.changed) == 3
        assert report.chunks > 3
        assert store.count(where={"kb": "notes", "kind": "chunk"}) == report.chunks
        assert len(store.get([manifest_id("notes")])) == 1


def test_an_unknown_knowledge_base_names_the_configured_ones(bases: KnowledgeBases) -> None:
    with pytest.raises(
        Exception, match=r"no knowledge base 'nope'; the configured ones are 'notes'"
    ):
        bases.query("nope", "anything")

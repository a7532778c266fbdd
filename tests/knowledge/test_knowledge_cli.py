"""`compozy knowledge ingest|query|list` and the knowledge_search tool through real processes,
bad knowledge configs as one error line, and the acceptance demo over this repository's docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import assert_one_error_line, run_compozy
from knowledge_support import REPO_DOCS, write_project


def test_ingest_query_and_list(tmp_path: Path) -> None:
    write_project(tmp_path)

    ingested = run_compozy("knowledge", "ingest", "notes", cwd=tmp_path)
    again = run_compozy("knowledge", "ingest", "notes", cwd=tmp_path)
    found = run_compozy(
        "knowledge", "query", "notes", "alpha backups", "--top-k", "2", cwd=tmp_path
    )
    as_json = run_compozy("knowledge", "query", "notes", "gardening", "--json", cwd=tmp_path)
    listed = run_compozy("knowledge", "list", cwd=tmp_path)

    assert ingested.code == 0, ingested.err
    assert ingested.err_lines[-1] == "ingested notes: 3 files, 3 chunks (3 changed)"
    assert again.err_lines == ["ingested notes: 3 files, 3 chunks (0 changed)"]
    assert found.code == 0, found.err
    lines = found.out.splitlines()
    assert lines[0].startswith("1. ")
    assert lines[0].endswith("notes/alpha.md#0")
    assert lines[1].strip().startswith("# Alpha guide")
    assert len(lines) == 4  # two matches, two lines each
    matches = json.loads(as_json.out)["matches"]
    assert matches[0]["source"] == "notes/extra.txt"
    assert set(matches[0]) == {"id", "score", "text", "source", "chunk_index"}
    assert -1.0 <= matches[-1]["score"] <= matches[0]["score"] <= 1.0
    assert listed.out.startswith("notes  vector_db=local  embedder=hashing  sources=")


def test_an_unknown_knowledge_base_is_one_error_line(tmp_path: Path) -> None:
    write_project(tmp_path)

    for command in (["ingest", "docs"], ["query", "docs", "x"]):
        message = assert_one_error_line(run_compozy("knowledge", *command, cwd=tmp_path))
        assert message == "error: no knowledge base 'docs'; the configured ones are 'notes'"


@pytest.mark.parametrize(
    ("vector_db", "expected"),
    [
        ("{id: v, provider: chroma, path: x, dimension: 8}", "allowed values are pgvector"),
        ("{id: v, provider: filesystem, dimension: 8}", "filesystem provider needs path"),
        ("{id: v, provider: redis, dimension: 8}", "redis provider needs url"),
        ("{id: v, provider: pgvector, dimension: 8}", "needs the postgres driver"),
        (
            "{id: v, provider: filesystem, path: x, dimension: 8}\n"
            "  embedders: [{id: h, dimension: 16}]\n"
            "  knowledge_bases: [{id: kb, embedder: h, sources: [{glob: '*.md'}]}]",
            "embedder 'h' has dimension 16 but vector_db 'v' has 8; make them equal",
        ),
    ],
)
def test_bad_knowledge_configs_exit_2_with_one_line(
    tmp_path: Path, vector_db: str, expected: str
) -> None:
    (tmp_path / "compozy.yaml").write_text(
        f"database: {{driver: sqlite, path: x.db}}\nknowledge:\n  vector_dbs:\n  - {vector_db}\n"
    )

    for command in (["knowledge", "list"], ["migrate", "status"]):
        assert expected in assert_one_error_line(run_compozy(*command, cwd=tmp_path))
    assert not (tmp_path / "x.db").exists()


def test_knowledge_search_in_a_workflow_through_compozy_run(tmp_path: Path) -> None:
    write_project(tmp_path, workflows=True)
    assert run_compozy("knowledge", "ingest", "notes", cwd=tmp_path).code == 0

    ran = run_compozy("run", "ask", "--input", '{"q": "weather forecasts"}', cwd=tmp_path)

    assert ran.code == 0, ran.err
    assert "SUCCESS" in ran.out
    assert "notes/beta.md" in ran.out


def test_the_acceptance_demo_over_this_repositorys_docs(tmp_path: Path) -> None:
    (tmp_path / "compozy.yaml").write_text(
        "database: {driver: sqlite, path: .compozy/compozy.db}\n"
        "knowledge:\n"
        "  vector_dbs:\n"
        "    - {id: local, provider: filesystem, path: .compozy/vectors, dimension: 384}\n"
        f"  knowledge_bases: [{{id: docs, sources: [{{glob: '{REPO_DOCS}/*.md'}}]}}]\n"
    )

    ingested = run_compozy("knowledge", "ingest", "docs", cwd=tmp_path)
    found = run_compozy(
        "knowledge", "query", "docs", "how do I move data to PostgreSQL", "--json", cwd=tmp_path
    )

    assert ingested.code == 0, ingested.err
    files = len(list(REPO_DOCS.glob("*.md")))
    assert ingested.err_lines[-1].startswith(f"ingested docs: {files} files, ")
    assert found.code == 0, found.err
    best = json.loads(found.out)["matches"][0]
    assert best["source"] == f"{REPO_DOCS.as_posix()}/moving-data.md"

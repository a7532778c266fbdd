"""The knowledge section of the configuration: shapes, defaults, references and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compozy.config import load_config
from compozy.errors import ConfigError

SQLITE = {"DB_DRIVER": "sqlite", "DB_PATH": ":memory:"}
LOCAL = {"id": "local", "provider": "filesystem", "path": "vectors", "dimension": 384}
DOCS = {"id": "docs", "sources": [{"glob": "docs/*.md"}]}


def knowledge(tmp_path: Path, **section: Any) -> Any:
    return load_config(env=SQLITE, overrides={"knowledge": section}, cwd=tmp_path).knowledge


def error(tmp_path: Path, **section: Any) -> str:
    with pytest.raises(ConfigError) as info:
        knowledge(tmp_path, **section)
    return str(info.value)


def test_defaults_of_a_minimal_knowledge_base(tmp_path: Path) -> None:
    found = knowledge(tmp_path, vector_dbs=[LOCAL], knowledge_bases=[DOCS])

    base = found.knowledge_bases[0]
    assert (base.chunking.size, base.chunking.overlap) == (800, 120)
    assert (base.retrieval.top_k, base.retrieval.min_score) == (5, 0.0)
    assert base.vector_db == "local"  # the only one
    # No embedder configured: hashing, of the vector DB's dimension.
    embedder = found.embedder_for(base)
    assert (embedder.provider, embedder.dimension, embedder.batch_size) == ("hashing", 384, 64)
    assert embedder.cache is False
    # Relative paths start at the project folder.
    assert found.root == str(tmp_path)
    assert found.vector_dbs[0].path == str(tmp_path / "vectors")


def test_a_relative_path_in_the_file_means_next_to_the_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "compozy.yaml").write_text(
        "knowledge:\n  vector_dbs: [{id: v, provider: qdrant, path: q, dimension: 8}]\n"
    )

    found = load_config(env=SQLITE, cwd=tmp_path / "project").knowledge

    assert found.root == str(project)
    assert found.vector_dbs[0].path == str(project / "q")


def test_openai_embedder_defaults_its_endpoint(tmp_path: Path) -> None:
    openai = {"id": "oa", "provider": "openai", "model": "text-embedding-3-small"}
    found = knowledge(tmp_path, embedders=[{**openai, "dimension": 1536, "api_key_env": "KEY"}])

    assert found.embedders[0].base_url == "https://api.openai.com/v1"
    assert found.embedders[0].api_key_env == "KEY"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {
                "embedders": [{"id": "hash", "dimension": 256}],
                "vector_dbs": [LOCAL],
                "knowledge_bases": [{**DOCS, "embedder": "hash"}],
            },
            "knowledge.knowledge_bases[0] (docs): embedder 'hash' has dimension 256 but "
            "vector_db 'local' has 384; make them equal.",
        ),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "vector_db": "remote"}]},
            "vector_db 'remote' is not configured (configured vector_dbs: 'local')",
        ),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "embedder": "st"}]},
            "embedder 'st' is not configured (configured embedders: none)",
        ),
        (
            {"vector_dbs": [LOCAL, {**LOCAL, "id": "other"}], "knowledge_bases": [DOCS]},
            "does not say which vector_db to use and there are 2",
        ),
        (
            {"embedders": [{"id": "e", "dimension": 4}, {"id": "e", "dimension": 4}]},
            "knowledge.embedders[1] repeats the id 'e'",
        ),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [DOCS, DOCS]},
            "knowledge.knowledge_bases[1] repeats the id 'docs'",
        ),
        ({"vector_dbs": [{**LOCAL, "path": None}]}, "filesystem provider needs path"),
        (
            {"vector_dbs": [{"id": "r", "provider": "redis", "dimension": 4}]},
            "redis provider needs url",
        ),
        (
            {"vector_dbs": [{"id": "q", "provider": "qdrant", "dimension": 4}]},
            "qdrant provider needs url",
        ),
        ({"vector_dbs": [{**LOCAL, "dimension": 0}]}, "dimension should be greater than 0"),
        ({"vector_dbs": [{**LOCAL, "provider": "chroma"}]}, "allowed values are pgvector"),
        (
            {"embedders": [{"id": "e", "provider": "word2vec", "dimension": 4}]},
            "allowed values are hashing, openai, sentence-transformers",
        ),
        (
            {"embedders": [{"id": "e", "provider": "openai", "dimension": 4}]},
            "the openai provider needs model",
        ),
        ({"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "sources": []}]}, "sources"),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "sources": [{}]}]},
            "exactly one of path (a file) and glob",
        ),
        (
            {
                "vector_dbs": [LOCAL],
                "knowledge_bases": [{**DOCS, "chunking": {"size": 200, "overlap": 200}}],
            },
            "overlap (200) smaller than size (200)",
        ),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "chunking": {"size": 10}}]},
            "chunking.size should be greater than or equal to 64",
        ),
        (
            {"vector_dbs": [LOCAL], "knowledge_bases": [{**DOCS, "retrieval": {"top_k": 51}}]},
            "retrieval.top_k should be less than or equal to 50",
        ),
    ],
)
def test_bad_knowledge_configs_say_what_to_fix(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    assert expected in error(tmp_path, **section)


def test_an_api_key_is_never_taken_or_echoed_from_the_file(tmp_path: Path) -> None:
    embedder = {"id": "oa", "provider": "openai", "model": "m", "dimension": 4}

    in_the_name = error(tmp_path, embedders=[{**embedder, "api_key_env": "sk-live-secret"}])
    as_a_key = error(tmp_path, embedders=[{**embedder, "api_key": "sk-live-secret"}])

    assert "not the key itself" in in_the_name
    assert "did you mean knowledge.embedders[0].api_key_env?" in as_a_key
    assert "sk-live-secret" not in in_the_name + as_a_key


def test_a_dsn_is_never_echoed_in_an_error(tmp_path: Path) -> None:
    bad = {"id": "p", "provider": "pgvector", "dimension": 4, "dsn": ["postgresql://u:pw@h/d"]}

    message = error(tmp_path, vector_dbs=[bad])

    assert "dsn" in message
    assert "pw@h" not in message

"""The knowledge routes through HTTP, on every backend: query (any key), ingest (admin), an
unknown knowledge base; and a workflow using knowledge_search started through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from knowledge_support import write_project

import compozy.engine as engine_module
from compozy.api import create_app
from compozy.auth import Role
from compozy.auth.keys import TEST_BCRYPT_ROUNDS
from compozy.config import load_config
from compozy.knowledge.bases import KnowledgeBases, activate
from compozy.store import Store


@pytest.fixture
def bases(tmp_path: Path) -> Iterator[KnowledgeBases]:
    with KnowledgeBases(load_config(write_project(tmp_path, workflows=True), env={})) as found:
        yield found


@pytest.fixture
def engine(compozy_store: Store, tmp_path: Path, bases: KnowledgeBases) -> Iterator[Any]:
    definitions = engine_module.load_definitions([tmp_path / "ask.yaml"])
    with activate(bases):
        real = engine_module.Engine(compozy_store, definitions)
        yield real
        real.close(wait=True)


@pytest.fixture
def client(compozy_store: Store, bases: KnowledgeBases, engine: Any) -> Iterator[TestClient]:
    app = create_app(
        compozy_store, engine=engine, knowledge=bases, bcrypt_rounds=TEST_BCRYPT_ROUNDS
    )
    with TestClient(app) as found:
        yield found


def headers(user_factory: Any, api_key_factory: Any, role: Role) -> dict[str, str]:
    _key, plaintext = api_key_factory.create_with_plaintext(user=user_factory.create(role=role))
    return {"Authorization": f"Bearer {plaintext}"}


def test_admin_ingests_any_key_queries(
    client: TestClient, user_factory: Any, api_key_factory: Any
) -> None:
    admin = headers(user_factory, api_key_factory, Role.ADMIN)
    member = headers(user_factory, api_key_factory, Role.USER)

    refused = client.post("/api/v0/knowledge/notes/ingest", headers=member)
    ingested = client.post("/api/v0/knowledge/notes/ingest", headers=admin)
    again = client.post("/api/v0/knowledge/notes/ingest", headers=admin)
    found = client.post(
        "/api/v0/knowledge/notes/query", json={"query": "weather", "top_k": 1}, headers=member
    )
    anonymous = client.post("/api/v0/knowledge/notes/query", json={"query": "weather"})

    assert refused.status_code == 403
    assert ingested.status_code == 200, ingested.text
    assert ingested.json()["files"] == 3
    assert sorted(ingested.json()["changed"]) == [
        "notes/alpha.md",
        "notes/beta.md",
        "notes/extra.txt",
    ]
    assert again.json()["changed"] == []
    assert again.json()["written"] == 0
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["kb"] == "notes"
    assert [m["source"] for m in body["matches"]] == ["notes/beta.md"]
    assert anonymous.status_code == 401


def test_unknown_knowledge_base_and_bad_bodies(
    client: TestClient, user_factory: Any, api_key_factory: Any
) -> None:
    admin = headers(user_factory, api_key_factory, Role.ADMIN)

    unknown = client.post("/api/v0/knowledge/docs/query", json={"query": "x"}, headers=admin)
    unknown_ingest = client.post("/api/v0/knowledge/docs/ingest", headers=admin)
    empty = client.post("/api/v0/knowledge/notes/query", json={"query": ""}, headers=admin)
    too_many = client.post(
        "/api/v0/knowledge/notes/query", json={"query": "x", "top_k": 51}, headers=admin
    )

    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == (
        "no knowledge base 'docs'; the configured ones are 'notes'"
    )
    assert unknown_ingest.status_code == 404
    assert empty.status_code == 422
    assert too_many.status_code == 422


def test_knowledge_search_in_a_workflow_started_through_the_api(
    client: TestClient, engine: Any, bases: KnowledgeBases, user_factory: Any, api_key_factory: Any
) -> None:
    member = headers(user_factory, api_key_factory, Role.USER)
    bases.ingest("notes")

    started = client.post(
        "/api/v0/workflows/ask/executions",
        json={"input": {"q": "gardening"}},
        headers=member,
    )

    assert started.status_code == 202, started.text
    exec_id = started.json()["workflow_exec_id"]
    assert engine.wait(exec_id, timeout=30).status.value == "SUCCESS"
    detail = client.get(f"/api/v0/executions/workflows/{exec_id}", headers=member).json()
    assert detail["status"] == "SUCCESS"
    assert detail["output"] == {"best": "notes/extra.txt"}
    search = next(task for task in detail["tasks"] if task["task_id"] == "search")
    assert search["output"]["matches"][0]["source"] == "notes/extra.txt"
    assert len(search["output"]["matches"]) == 2  # top_k: 2 in the workflow


def test_an_app_without_knowledge_answers_404(
    compozy_store: Store, user_factory: Any, api_key_factory: Any
) -> None:
    app = create_app(compozy_store, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    member = headers(user_factory, api_key_factory, Role.USER)

    with TestClient(app) as bare:
        answer = bare.post("/api/v0/knowledge/notes/query", json={"query": "x"}, headers=member)

    assert answer.status_code == 404
    assert "this server has none" in answer.json()["error"]["message"]

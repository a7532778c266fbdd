"""GET /health and the OpenAPI document: public, and describing every route."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from compozy.store import Store, StoreHealth
from compozy.store.migrations import revisions


def test_health_reports_driver_and_head_revision_without_auth(
    client: TestClient, compozy_store: Store
) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    head = revisions()[-1]
    assert response.json() == {
        "status": "ok",
        "driver": compozy_store.driver,
        "schema_revision": head,
        "head": head,
    }


def test_health_is_503_when_the_store_is_not_usable(compozy_store: Store, app_factory: Any) -> None:
    def behind() -> StoreHealth:
        return StoreHealth(False, "sqlite", ":memory:", "0001", "0002", "schema at 0001")

    with TestClient(app_factory(compozy_store, revision_info=behind)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "driver": "sqlite",
        "schema_revision": "0001",
        "head": "0002",
    }
    # The detail may name hosts or paths: it is for the log, not for anonymous callers.
    assert "schema at" not in response.text


def test_openapi_document_is_public_and_lists_every_route(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    routes = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert routes == {
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/api/v0/workflows"),
        ("POST", "/api/v0/workflows/{workflow_id}/executions"),
        ("GET", "/api/v0/executions/workflows"),
        ("GET", "/api/v0/executions/workflows/{exec_id}"),
        ("POST", "/api/v0/executions/workflows/{exec_id}/cancel"),
        ("GET", "/api/v0/executions/tasks/{task_exec_id}"),
        ("GET", "/api/v0/executions/tasks/{task_exec_id}/progress"),
        ("POST", "/api/v0/users"),
        ("GET", "/api/v0/users"),
        ("DELETE", "/api/v0/users/{user_id}"),
        ("POST", "/api/v0/users/{user_id}/api-keys"),
        ("GET", "/api/v0/users/{user_id}/api-keys"),
        ("DELETE", "/api/v0/api-keys/{key_id}"),
        ("POST", "/api/v0/knowledge/{kb}/query"),
        ("POST", "/api/v0/knowledge/{kb}/ingest"),
    }


def test_openapi_documents_auth_and_the_error_body_on_every_protected_route(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["APIKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["APIKey"]["description"],
    }
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in ("/health", "/metrics"):
                assert "security" not in operation
                continue
            assert operation["security"] == [{"APIKey": []}], (method, path)
            responses = operation["responses"]
            assert responses["401"]["content"]["application/json"]["schema"] == error_ref
            # FastAPI's own 422 shape must not leak into the document: ours replaces it.
            if "422" in responses:
                assert responses["422"]["content"]["application/json"]["schema"] == error_ref
            if "{" in path:
                assert "404" in responses, (method, path)
            if "/users" in path or "/api-keys" in path:
                assert "403" in responses, (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_docs_page_is_public_and_loads_nothing_from_elsewhere(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "openapi.json" in response.text
    # Every route and schema of the document is on the page, which needs no network.
    document = client.get("/openapi.json").json()
    for path in document["paths"]:
        assert f"<code>{path}</code>" in response.text
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in response.text
    assert "<script" not in response.text
    assert "http://" not in response.text
    assert "https://" not in response.text
    assert client.get("/redoc").status_code == 404

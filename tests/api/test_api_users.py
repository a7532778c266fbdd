"""Admin routes: users and API keys, created, listed and deleted through HTTP."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.auth import Role
from compozy.errors import APIKeyNotFound, LastAdmin, UserNotFound
from compozy.store import Store

USERS = "/api/v0/users"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_create_user_returns_201_with_the_stored_user(
    client: TestClient, admin: Any, compozy_store: Store
) -> None:
    response = client.post(
        USERS, json={"email": "Ada@Example.com", "role": "admin"}, headers=admin.headers
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "role", "created_at"}
    assert body["email"] == "Ada@Example.com"  # stored with the case it was given
    assert body["role"] == "admin"
    assert TIMESTAMP.match(body["created_at"])
    stored = compozy_store.auth.get_user_by_id(body["id"])
    assert stored.email == "Ada@Example.com"
    assert stored.role is Role.ADMIN


def test_role_defaults_to_user(client: TestClient, admin: Any) -> None:
    response = client.post(USERS, json={"email": "bob@example.com"}, headers=admin.headers)
    assert response.status_code == 201
    assert response.json()["role"] == "user"


def test_duplicate_email_is_409_whatever_its_case(client: TestClient, admin: Any) -> None:
    first = client.post(USERS, json={"email": "dup@example.com"}, headers=admin.headers)
    second = client.post(USERS, json={"email": "DUP@example.COM"}, headers=admin.headers)
    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "EmailExists"
    assert "DUP@example.COM" in second.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "no-at-sign"},
        {"email": "a b@example.com"},
        {"email": "x@"},
        {"email": "a@example.com", "role": "root"},
        {"email": "a@example.com", "extra": 1},
        {"email": 5},
        {"email": "a\u0000b@example.com"},
        {"email": "a" * 320 + "@example.com"},
        [],
    ],
)
def test_invalid_user_bodies_are_422(
    client: TestClient, admin: Any, compozy_store: Store, body: Any
) -> None:
    response = client.post(USERS, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "RequestValidationError"
    assert [u.id for u in compozy_store.auth.list_users()] == [admin.user.id]


def test_body_that_is_not_json_is_422(client: TestClient, admin: Any) -> None:
    response = client.post(
        USERS,
        content=b"{not json",
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "RequestValidationError"


def test_body_that_is_not_utf8_is_400(client: TestClient, admin: Any) -> None:
    response = client.post(
        USERS,
        content=b'{"email": "\xff\xfe@x.y"}',
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_list_users_newest_first(
    client: TestClient, admin: Any, user_factory: Any, compozy_store: Store
) -> None:
    others = [user_factory.create() for _ in range(3)]
    response = client.get(USERS, headers=admin.headers)
    assert response.status_code == 200
    ids = [user["id"] for user in response.json()["items"]]
    assert ids == [u.id for u in compozy_store.auth.list_users()]
    assert set(ids) == {admin.user.id, *(u.id for u in others)}
    created = [user["created_at"] for user in response.json()["items"]]
    assert created == sorted(created, reverse=True)


def test_delete_user_cascades_to_keys_and_is_404_the_second_time(
    client: TestClient, admin: Any, member: Any, api_key_factory: Any, compozy_store: Store
) -> None:
    extra_key = api_key_factory.create(user=member.user)
    response = client.delete(f"{USERS}/{member.user.id}", headers=admin.headers)
    assert response.status_code == 204
    assert response.content == b""
    with pytest.raises(UserNotFound):
        compozy_store.auth.get_user_by_id(member.user.id)
    for key_id in (member.key.id, extra_key.id):
        with pytest.raises(APIKeyNotFound):
            compozy_store.auth.get_api_key_by_id(key_id)
    again = client.delete(f"{USERS}/{member.user.id}", headers=admin.headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "UserNotFound"


def test_created_key_is_shown_once_and_authenticates(
    client: TestClient, admin: Any, member: Any, compozy_store: Store
) -> None:
    response = client.post(f"{USERS}/{member.user.id}/api-keys", headers=admin.headers)
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"id", "user_id", "prefix", "created_at", "last_used", "api_key"}
    assert body["user_id"] == member.user.id
    assert body["last_used"] is None
    plaintext = body["api_key"]
    assert plaintext.startswith(f"cpzy_{body['prefix']}_")
    stored = compozy_store.auth.get_api_key_by_id(body["id"])
    assert plaintext.encode() not in stored.hash  # only the bcrypt hash is kept

    # It works, as its owner (a member: executions yes, admin routes no).
    as_member = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/api/v0/executions/workflows", headers=as_member).status_code == 200
    assert client.get(USERS, headers=as_member).status_code == 403

    # Listed afterwards: metadata only, never the plaintext or the hash.
    listing = client.get(f"{USERS}/{member.user.id}/api-keys", headers=admin.headers)
    assert listing.status_code == 200
    assert plaintext not in listing.text
    keys = {key["id"]: key for key in listing.json()["items"]}
    assert set(keys) == {body["id"], member.key.id}
    for key in keys.values():
        assert set(key) == {"id", "user_id", "prefix", "created_at", "last_used"}
    assert keys[body["id"]]["last_used"] is not None  # it was just used


def test_list_keys_newest_first(
    client: TestClient, admin: Any, member: Any, api_key_factory: Any, compozy_store: Store
) -> None:
    for _ in range(2):
        api_key_factory.create(user=member.user)
    response = client.get(f"{USERS}/{member.user.id}/api-keys", headers=admin.headers)
    expected = [k.id for k in compozy_store.auth.list_api_keys_by_user_id(member.user.id)]
    assert [key["id"] for key in response.json()["items"]] == expected
    assert len(expected) == 3


def test_keys_of_an_unknown_user_are_404(client: TestClient, admin: Any) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, f"{USERS}/nobody/api-keys", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["error"] == {
            "code": "UserNotFound",
            "message": response.json()["error"]["message"],
        }
        assert "nobody" in response.json()["error"]["message"]


def test_delete_key_stops_it_at_once(
    client: TestClient, admin: Any, member: Any, compozy_store: Store
) -> None:
    assert client.get("/api/v0/executions/workflows", headers=member.headers).status_code == 200
    response = client.delete(f"/api/v0/api-keys/{member.key.id}", headers=admin.headers)
    assert response.status_code == 204
    assert compozy_store.auth.list_api_keys_by_user_id(member.user.id) == []
    refused = client.get("/api/v0/executions/workflows", headers=member.headers)
    assert refused.status_code == 401
    again = client.delete(f"/api/v0/api-keys/{member.key.id}", headers=admin.headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "APIKeyNotFound"


@pytest.mark.parametrize(
    "path",
    [
        USERS + "/" + "u" * 256,
        USERS + "/%00",
        USERS + "/" + "u" * 256 + "/api-keys",
        "/api/v0/api-keys/" + "k" * 256,
    ],
)
def test_bad_ids_in_admin_paths_are_422(client: TestClient, admin: Any, path: str) -> None:
    method = "GET" if path.endswith("api-keys") else "DELETE"
    response = client.request(method, path, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "RequestValidationError"


# --- no lock-out: the last admin and the last admin key stay --------------------------------------


def _assert_last_admin(response: Any, *words: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "LastAdmin"
    for word in words:
        assert word in error["message"]


def test_the_only_admin_cannot_delete_their_last_key(
    client: TestClient, admin: Any, compozy_store: Store
) -> None:
    response = client.delete(f"/api/v0/api-keys/{admin.key.id}", headers=admin.headers)

    _assert_last_admin(response, admin.key.id, "last API key of an admin")
    assert client.get(USERS, headers=admin.headers).status_code == 200  # still signed in
    # With a second key, the first one goes.
    created = client.post(f"{USERS}/{admin.user.id}/api-keys", headers=admin.headers).json()
    assert (
        client.delete(f"/api/v0/api-keys/{admin.key.id}", headers=admin.headers).status_code == 204
    )
    assert [k.id for k in compozy_store.auth.list_api_keys_by_user_id(admin.user.id)] == [
        created["id"]
    ]


def test_the_only_admin_cannot_delete_themselves(
    client: TestClient, admin: Any, member: Any, compozy_store: Store
) -> None:
    response = client.delete(f"{USERS}/{admin.user.id}", headers=admin.headers)

    _assert_last_admin(response, admin.user.id, "only admin")
    assert compozy_store.auth.get_user_by_id(admin.user.id) == admin.user
    assert compozy_store.auth.get_api_key_by_id(admin.key.id).id == admin.key.id


def test_an_admin_holding_every_admin_key_stays_until_another_admin_has_one(
    client: TestClient, admin: Any, user_factory: Any, compozy_store: Store
) -> None:
    keyless = user_factory.create(role=Role.ADMIN)

    refused = client.delete(f"{USERS}/{admin.user.id}", headers=admin.headers)

    _assert_last_admin(refused, "holds the only admin API keys")
    client.post(f"{USERS}/{keyless.id}/api-keys", headers=admin.headers)
    assert client.delete(f"{USERS}/{admin.user.id}", headers=admin.headers).status_code == 204
    assert [u.id for u in compozy_store.auth.list_users()] == [keyless.id]


def test_members_and_their_keys_are_deleted_freely(
    client: TestClient, admin: Any, member: Any, caller_factory: Any
) -> None:
    other = caller_factory(Role.USER)
    assert (
        client.delete(f"/api/v0/api-keys/{member.key.id}", headers=admin.headers).status_code == 204
    )
    assert client.delete(f"{USERS}/{other.user.id}", headers=admin.headers).status_code == 204


def test_two_racing_deletes_of_the_last_two_admin_keys_do_not_both_succeed(
    client: TestClient, admin: Any, caller_factory: Any, compozy_store: Store
) -> None:
    other = caller_factory(Role.ADMIN)
    responses: list[Any] = []

    def delete_own_key() -> None:
        path = f"/api/v0/api-keys/{other.key.id}"
        responses.append(client.delete(path, headers=other.headers))

    racer = threading.Thread(target=delete_own_key)
    with compozy_store.transaction() as tx:
        # The first delete is made and not yet committed when the second one is asked for.
        tx.auth.delete_api_key(admin.key.id)
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive()  # the second delete waits for the first transaction to end
    racer.join(timeout=30)

    _assert_last_admin(responses[0], other.key.id)
    assert compozy_store.auth.get_api_key_by_id(other.key.id).id == other.key.id
    with pytest.raises(APIKeyNotFound):
        compozy_store.auth.get_api_key_by_id(admin.key.id)


def test_the_store_refuses_demoting_the_only_admin_and_a_forced_delete_is_allowed(
    admin: Any, compozy_store: Store
) -> None:
    # The API has no route that changes a role; the store keeps the same rule for callers.
    demoted = compozy_store.auth.get_user_by_id(admin.user.id)
    demoted.role = Role.USER
    with pytest.raises(LastAdmin, match="demoting them"):
        compozy_store.auth.update_user(demoted)
    assert compozy_store.auth.get_user_by_id(admin.user.id).role is Role.ADMIN

    # `compozy keys revoke --force` (the operator can make a new key from the CLI).
    compozy_store.auth.delete_api_key(admin.key.id, force=True)
    assert compozy_store.auth.list_api_keys_by_user_id(admin.user.id) == []
    compozy_store.auth.delete_user(admin.user.id, force=True)
    assert compozy_store.auth.list_users() == []

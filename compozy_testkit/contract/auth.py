"""Contract of ``AuthRepository`` (SPEC 3.3) and of API keys and emails (SPEC 1.2-1.3)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from compozy.auth import APIKey, AuthRepository, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, fingerprint, new_api_key, verify_api_key
from compozy.core import Role
from compozy.errors import (
    AlreadyBootstrapped,
    APIKeyNotFound,
    ConstraintViolation,
    DuplicateKey,
    EmailExists,
    UserNotFound,
    ValidationError,
)
from compozy.store import Store
from compozy_testkit.contract._build import at


def _user(store: Store, email: str, **fields: object) -> User:
    return store.auth.create_user(User(email=email, **fields))  # type: ignore[arg-type]


def _key(store: Store, user: User, **fields: object) -> tuple[APIKey, str]:
    key, plaintext = new_api_key(user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    for name, value in fields.items():
        setattr(key, name, value)
    return store.auth.create_api_key(key), plaintext


def _assert_found_until(
    auth: AuthRepository, key: APIKey, plaintext: str, revoke: Callable[[], object]
) -> None:
    """``key`` is found by the fingerprint of ``plaintext`` until ``revoke()``, and not after."""
    assert auth.get_api_key_by_fingerprint(fingerprint(plaintext)) == key
    revoke()
    with pytest.raises(APIKeyNotFound):
        auth.get_api_key_by_fingerprint(fingerprint(plaintext))


class AuthRepositoryContract:
    """Every method of the auth repository, on whatever Store ``compozy_store`` gives."""

    # --- users ----------------------------------------------------------------------------

    def test_create_user_returns_the_stored_user_and_finds_it_by_id(
        self, compozy_store: Store
    ) -> None:
        user = _user(compozy_store, "Ada@Example.com")
        assert user.created_at is not None
        assert user.role is Role.USER
        assert compozy_store.auth.get_user_by_id(user.id) == user

    @pytest.mark.parametrize(
        ("created", "looked_up"),
        [
            ("Ada@Example.com", "ada@example.COM"),
            ("ÉLODIE@exemple.fr", "élodie@EXEMPLE.fr"),
            ("STRASSE@b.de", "straße@b.de"),
        ],
    )
    def test_emails_match_case_insensitively_unicode_aware_and_keep_their_case(
        self, compozy_store: Store, created: str, looked_up: str
    ) -> None:
        user = _user(compozy_store, created)
        found = compozy_store.auth.get_user_by_email(looked_up)
        assert found.id == user.id
        assert found.email == created
        with pytest.raises(EmailExists, match="exists"):
            _user(compozy_store, looked_up)

    def test_get_user_of_a_missing_id_or_email_raises_user_not_found(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(UserNotFound, match="no-user"):
            compozy_store.auth.get_user_by_id("no-user")
        with pytest.raises(UserNotFound, match=re.escape("nobody@x.io")):
            compozy_store.auth.get_user_by_email("nobody@x.io")

    def test_an_invalid_email_is_refused(self, compozy_store: Store) -> None:
        for bad in ("no-at-sign", "@x.io", "a b@x.io", "a@"):
            with pytest.raises(ValidationError, match="email"):
                _user(compozy_store, bad)
        assert compozy_store.auth.list_users() == []

    def test_list_users_orders_newest_first_with_ties_on_id_descending(
        self, compozy_store: Store
    ) -> None:
        rows = (("u-a", 1), ("u-B", 1), ("u-b", 1), ("old", 0), ("new", 2))
        for n, (user_id, seconds) in enumerate(rows):
            _user(compozy_store, f"user{n}@x.io", id=user_id, created_at=at(seconds))
        assert [u.id for u in compozy_store.auth.list_users()] == [
            "new",
            "u-b",
            "u-a",
            "u-B",
            "old",
        ]

    def test_update_user_changes_email_and_role(self, compozy_store: Store) -> None:
        user = _user(compozy_store, "old@x.io")
        user.email, user.role = "New@X.io", Role.ADMIN
        updated = compozy_store.auth.update_user(user)
        assert (updated.email, updated.role, updated.created_at) == (
            "New@X.io",
            Role.ADMIN,
            user.created_at,
        )
        assert compozy_store.auth.get_user_by_email("new@x.io").id == user.id
        with pytest.raises(UserNotFound):
            compozy_store.auth.get_user_by_email("old@x.io")

    def test_update_user_to_a_taken_email_raises_email_exists(self, compozy_store: Store) -> None:
        _user(compozy_store, "taken@x.io")
        other = _user(compozy_store, "other@x.io")
        other.email = "TAKEN@x.io"
        with pytest.raises(EmailExists):
            compozy_store.auth.update_user(other)
        assert compozy_store.auth.get_user_by_id(other.id).email == "other@x.io"

    def test_update_user_of_a_missing_user_raises_user_not_found(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(UserNotFound, match="ghost"):
            compozy_store.auth.update_user(User(id="ghost", email="g@x.io"))

    def test_delete_user_removes_the_user_and_cascades_to_their_keys(
        self, compozy_store: Store
    ) -> None:
        user = _user(compozy_store, "del@x.io")
        key, _ = _key(compozy_store, user)
        compozy_store.auth.delete_user(user.id)
        with pytest.raises(UserNotFound):
            compozy_store.auth.get_user_by_id(user.id)
        with pytest.raises(APIKeyNotFound):
            compozy_store.auth.get_api_key_by_id(key.id)
        with pytest.raises(UserNotFound, match=user.id):
            compozy_store.auth.delete_user(user.id)

    # --- bootstrap ------------------------------------------------------------------------

    def test_create_initial_admin_forces_the_admin_role(self, compozy_store: Store) -> None:
        admin = compozy_store.auth.create_initial_admin_if_none(
            User(email="root@x.io", role=Role.USER)
        )
        assert admin.role is Role.ADMIN
        assert compozy_store.auth.get_user_by_id(admin.id).role is Role.ADMIN

    def test_create_initial_admin_when_an_admin_exists_raises_already_bootstrapped(
        self, compozy_store: Store
    ) -> None:
        _user(compozy_store, "boss@x.io", role=Role.ADMIN)
        with pytest.raises(AlreadyBootstrapped):
            compozy_store.auth.create_initial_admin_if_none(User(email="second@x.io"))
        assert [u.email for u in compozy_store.auth.list_users()] == ["boss@x.io"]

    def test_create_initial_admin_is_allowed_when_only_plain_users_exist(
        self, compozy_store: Store
    ) -> None:
        _user(compozy_store, "plain@x.io")
        admin = compozy_store.auth.create_initial_admin_if_none(User(email="first@x.io"))
        assert admin.role is Role.ADMIN

    # --- API keys -------------------------------------------------------------------------

    def test_new_api_keys_hash_with_bcrypt_at_the_production_work_factor(self) -> None:
        key, plaintext = new_api_key("someone")
        assert key.hash.startswith(b"$2b$12$")
        assert verify_api_key(plaintext, key)

    def test_create_api_key_stores_only_hash_and_fingerprint(self, compozy_store: Store) -> None:
        user = _user(compozy_store, "k@x.io")
        key, plaintext = _key(compozy_store, user)
        assert plaintext.startswith(f"cpzy_{key.prefix}_")
        assert key.fingerprint == hashlib.sha256(plaintext.encode()).digest()
        assert plaintext.encode() not in key.hash
        assert plaintext not in repr(key)
        found = compozy_store.auth.get_api_key_by_fingerprint(fingerprint(plaintext))
        assert found == key
        assert verify_api_key(plaintext, found)
        assert not verify_api_key(plaintext + "x", found)

    def test_create_api_key_for_an_unknown_user_raises_constraint_violation(
        self, compozy_store: Store
    ) -> None:
        key, _ = new_api_key("no-such-user", bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        with pytest.raises(ConstraintViolation, match="no-such-user"):
            compozy_store.auth.create_api_key(key)

    @pytest.mark.parametrize("field", ["prefix", "fingerprint", "id"])
    def test_create_api_key_with_a_taken_field_raises_duplicate_key(
        self, compozy_store: Store, field: str
    ) -> None:
        user = _user(compozy_store, "dup@x.io")
        first, _ = _key(compozy_store, user)
        second, _ = new_api_key(user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        setattr(second, field, getattr(first, field))
        # The message names what is taken: the prefix, the fingerprint or the id.
        taken = {"prefix": f"prefix {first.prefix!r}", "fingerprint": "fingerprint"}
        what = taken.get(field, f"id {first.id}")
        with pytest.raises(DuplicateKey, match=re.escape(f"with this {what} exists")):
            compozy_store.auth.create_api_key(second)
        assert [k.id for k in compozy_store.auth.list_api_keys_by_user_id(user.id)] == [first.id]

    def test_get_api_key_by_id_returns_the_stored_key(self, compozy_store: Store) -> None:
        user = _user(compozy_store, "byid@x.io")
        other = _user(compozy_store, "byid-other@x.io")
        _key(compozy_store, other, created_at=at(6))  # first: a lookup ignoring the id finds it
        key, plaintext = _key(compozy_store, user, created_at=at(5))
        assert (key.user_id, key.created_at, key.last_used) == (user.id, at(5), None)
        found = compozy_store.auth.get_api_key_by_id(key.id)
        assert found == key
        assert verify_api_key(plaintext, found)

    def test_get_api_key_of_a_missing_id_or_fingerprint_raises_api_key_not_found(
        self, compozy_store: Store
    ) -> None:
        with pytest.raises(APIKeyNotFound, match="no-key"):
            compozy_store.auth.get_api_key_by_id("no-key")
        with pytest.raises(APIKeyNotFound):
            compozy_store.auth.get_api_key_by_fingerprint(fingerprint("cpzy_x_y"))

    def test_list_api_keys_by_user_orders_newest_first_with_ties_on_id_descending(
        self, compozy_store: Store
    ) -> None:
        user = _user(compozy_store, "many@x.io")
        other = _user(compozy_store, "other@x.io")
        # "k-z" is the oldest and the greatest id: the order is created_at first.
        for key_id, seconds in (("k-a", 1), ("k-B", 1), ("k-b", 1), ("k-z", 0)):
            _key(compozy_store, user, id=key_id, created_at=at(seconds))
        _key(compozy_store, other, id="foreign")
        assert [k.id for k in compozy_store.auth.list_api_keys_by_user_id(user.id)] == [
            "k-b",
            "k-a",
            "k-B",
            "k-z",
        ]
        assert compozy_store.auth.list_api_keys_by_user_id("nobody") == []

    def test_update_api_key_last_used_is_monotonic(self, compozy_store: Store) -> None:
        user = _user(compozy_store, "use@x.io")
        key, _ = _key(compozy_store, user)
        assert key.last_used is None
        first = compozy_store.auth.update_api_key_last_used(key.id).last_used
        second = compozy_store.auth.update_api_key_last_used(key.id).last_used
        assert first is not None
        assert second is not None
        assert second >= first
        future, _ = _key(compozy_store, user, last_used=at(10**9))
        assert compozy_store.auth.update_api_key_last_used(future.id).last_used == at(10**9)
        with pytest.raises(APIKeyNotFound, match="no-key"):
            compozy_store.auth.update_api_key_last_used("no-key")

    def test_delete_api_key_removes_it(self, compozy_store: Store) -> None:
        user = _user(compozy_store, "d@x.io")
        key, _ = _key(compozy_store, user)
        compozy_store.auth.delete_api_key(key.id)
        with pytest.raises(APIKeyNotFound):
            compozy_store.auth.get_api_key_by_id(key.id)
        with pytest.raises(APIKeyNotFound, match=key.id):
            compozy_store.auth.delete_api_key(key.id)

    def test_a_deleted_api_key_is_no_longer_found_by_fingerprint(
        self, compozy_store: Store
    ) -> None:
        # The API authenticates by fingerprint: a revoked key must stop working there too.
        user = _user(compozy_store, "revoke@x.io")
        key, plaintext = _key(compozy_store, user)
        kept, kept_plaintext = _key(compozy_store, user)
        auth = compozy_store.auth
        _assert_found_until(auth, key, plaintext, lambda: auth.delete_api_key(key.id))
        assert auth.get_api_key_by_fingerprint(fingerprint(kept_plaintext)) == kept
        assert [k.id for k in auth.list_api_keys_by_user_id(user.id)] == [kept.id]

    def test_the_keys_of_a_deleted_user_are_no_longer_found_by_fingerprint(
        self, compozy_store: Store
    ) -> None:
        leaver = _user(compozy_store, "leaver@x.io")
        stayer = _user(compozy_store, "stayer@x.io")
        key, plaintext = _key(compozy_store, leaver)
        other, other_plaintext = _key(compozy_store, stayer)
        auth = compozy_store.auth
        _assert_found_until(auth, key, plaintext, lambda: auth.delete_user(leaver.id))
        assert auth.list_api_keys_by_user_id(leaver.id) == []
        assert auth.get_api_key_by_fingerprint(fingerprint(other_plaintext)) == other
        assert auth.get_user_by_id(stayer.id) == stayer

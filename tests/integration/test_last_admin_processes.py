"""The last-admin rule holds between processes: two processes that each delete one of the last
two admin keys at the same moment never both succeed (PostgreSQL: the admin advisory lock;
a SQLite file: its single writer)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.config import DatabaseConfig
from compozy.errors import LastAdmin
from compozy.store import open_store
from compozy_testkit.databases import TestDatabase

ROUNDS = 4


def _delete_key(config: DatabaseConfig, key_id: str, barrier: Any) -> str:
    with open_store(config) as store:
        store.health()  # connected before the race starts
        barrier.wait(timeout=60)
        try:
            store.auth.delete_api_key(key_id)
        except LastAdmin:
            return "refused"
        return "deleted"


@pytest.mark.compozy_backends(
    "sqlite-file", "postgres", reason="other processes open the same database"
)
def test_racing_processes_never_delete_the_last_two_admin_keys_both(
    compozy_database: TestDatabase,
) -> None:
    assert compozy_database.config is not None
    store = compozy_database.store()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        for round_ in range(ROUNDS):
            keys = []
            for n in range(2):
                admin = store.auth.create_user(User(email=f"a{round_}-{n}@x.io", role=Role.ADMIN))
                key = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)[0]
                keys.append(store.auth.create_api_key(key).id)
            barrier = manager.Barrier(2)
            outcomes = pool.starmap(
                _delete_key, [(compozy_database.config, key_id, barrier) for key_id in keys]
            )
            assert sorted(outcomes) == ["deleted", "refused"], (round_, outcomes)
            left = [k for k in keys if any(k == x.id for x in _admin_keys(store))]
            assert len(left) == 1, (round_, left)
            for key_id in left:  # the next round starts from no admin key
                store.auth.delete_api_key(key_id, force=True)


def _admin_keys(store: Any) -> list[Any]:
    admins = [u for u in store.auth.list_users() if u.role is Role.ADMIN]
    return [k for u in admins for k in store.auth.list_api_keys_by_user_id(u.id)]

"""``AuthRepository`` on SQLAlchemy Core, one implementation for both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from compozy.auth import APIKey, User, email_key
from compozy.core import DEFAULT_PAGE_SIZE, Page, Role
from compozy.core.values import check_id, check_text, utc_now
from compozy.errors import (
    AlreadyBootstrapped,
    APIKeyNotFound,
    ConflictError,
    ConstraintViolation,
    DuplicateKey,
    EmailExists,
    LastAdmin,
    NotFoundError,
    UserNotFound,
)
from compozy.store.drivers.base import ForeignKeyViolation, UniqueViolation
from compozy.store.repos.common import Repository, not_before, now_param
from compozy.store.repos.paging import read_page
from compozy.store.tables import api_keys, users

_U = users.c
_K = api_keys.c
# "compozy": serialises the writes that decide who can administer (creating the initial admin,
# deleting or demoting an admin, deleting an admin's key), so two of them never both pass a check
# that only one may pass. On SQLite, write transactions are serialised already.
_ADMIN_LOCK = 0x636F6D706F7A79
_ADMIN = Role.ADMIN.value


def _user(row: Row[Any]) -> User:
    return User(id=row.id, email=row.email, role=row.role, created_at=row.created_at)


def _key(row: Row[Any]) -> APIKey:
    return APIKey(
        id=row.id,
        user_id=row.user_id,
        prefix=row.prefix,
        hash=bytes(row.hash),
        fingerprint=bytes(row.fingerprint),
        created_at=row.created_at,
        last_used=row.last_used,
    )


def _user_conflict(error: UniqueViolation, user: User) -> ConflictError:
    if error.constraint == "uq_users_email_key":
        return EmailExists(f"a user with email {user.email!r} exists already (emails ignore case)")
    return ConflictError(f"a user with id {user.id} exists already")


class SqlAuthRepository(Repository):
    """Users and their API keys."""

    def _insert_user(self, user: User) -> User:
        stmt = (
            sa.insert(users)
            .values(
                id=user.id,
                email=user.email,
                email_key=email_key(user.email),
                role=user.role.value,
                created_at=user.created_at or utc_now(),
            )
            .returning(*users.c)
        )
        try:
            with self._write() as conn:
                return _user(conn.execute(stmt).one())
        except UniqueViolation as exc:
            raise _user_conflict(exc, user) from None

    def create_user(self, user: User) -> User:
        user.validate()
        return self._insert_user(user)

    def get_user_by_id(self, user_id: str) -> User:
        return _user(self._by_id(users, user_id, "user", UserNotFound))

    def get_user_by_email(self, email: str) -> User:
        email = check_text(email, "email").strip()
        with self._read() as conn:
            row = conn.execute(sa.select(users).where(_U.email_key == email_key(email))).first()
        if row is None:
            raise UserNotFound(f"no user has the email {email!r}")
        return _user(row)

    def list_users(self) -> list[User]:
        stmt = sa.select(users).order_by(_U.created_at.desc(), _U.id.desc())
        with self._read() as conn:
            return [_user(row) for row in conn.execute(stmt)]

    def list_users_page(
        self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[User]:
        with self._read() as conn:
            page = read_page(conn, sa.select(users), _U.id, limit=limit, cursor=cursor)
        return Page([_user(r) for r in page.items], page.next_cursor)

    def update_user(self, user: User) -> User:
        user.validate()
        if user.role is not Role.ADMIN:
            with self._write() as conn:
                self._db.driver.serialize(conn, _ADMIN_LOCK)
                self._refuse_losing_admin(conn, user.id, "demoting")
                return self._update_user(user)
        return self._update_user(user)

    def _update_user(self, user: User) -> User:
        stmt = (
            sa.update(users)
            .where(_U.id == user.id)
            .values(email=user.email, email_key=email_key(user.email), role=user.role.value)
            .returning(*users.c)
        )
        try:
            with self._write() as conn:
                row = conn.execute(stmt).first()
        except UniqueViolation as exc:
            raise _user_conflict(exc, user) from None
        if row is None:
            raise UserNotFound(f"user {user.id} not found")
        return _user(row)

    def delete_user(self, user_id: str, *, force: bool = False) -> None:
        user_id = check_id(user_id, "user id")

        def refuse(conn: Connection, found: str) -> None:
            self._refuse_losing_admin(conn, found, "deleting")

        self._delete_guarded(users, user_id, "user", UserNotFound, None if force else refuse)

    def create_initial_admin_if_none(self, user: User) -> User:
        user.role = Role.ADMIN
        user.validate()
        with self._write() as conn:
            # Two processes bootstrapping at once must not both see "no admin" and insert.
            self._db.driver.serialize(conn, _ADMIN_LOCK)
            admin = conn.execute(
                sa.select(_U.id).where(_U.role == Role.ADMIN.value).limit(1)
            ).first()
            if admin is not None:
                raise AlreadyBootstrapped(
                    f"an admin user ({admin.id}) exists already; create further users as that admin"
                )
            return self._insert_user(user)

    def create_api_key(self, key: APIKey) -> APIKey:
        key.validate()
        stmt = (
            sa.insert(api_keys)
            .values(
                id=key.id,
                user_id=key.user_id,
                prefix=key.prefix,
                hash=key.hash,
                fingerprint=key.fingerprint,
                created_at=key.created_at or utc_now(),
                last_used=key.last_used,
            )
            .returning(*api_keys.c)
        )
        try:
            with self._write() as conn:
                return _key(conn.execute(stmt).one())
        except ForeignKeyViolation:
            raise ConstraintViolation(
                f"api key {key.id} belongs to user {key.user_id}, which does not exist: "
                "create the user first"
            ) from None
        except UniqueViolation as exc:
            what = {
                "uq_api_keys_prefix": f"prefix {key.prefix!r}",
                "uq_api_keys_fingerprint": "fingerprint",
            }.get(exc.constraint or "", f"id {key.id}")
            raise DuplicateKey(f"an api key with this {what} exists already") from None

    def get_api_key_by_id(self, key_id: str) -> APIKey:
        return _key(self._by_id(api_keys, key_id, "api key", APIKeyNotFound))

    def get_api_key_by_fingerprint(self, fingerprint: bytes) -> APIKey:
        if not isinstance(fingerprint, bytes):
            raise APIKeyNotFound("no api key has this fingerprint (it must be bytes)")
        with self._read() as conn:
            row = conn.execute(sa.select(api_keys).where(_K.fingerprint == fingerprint)).first()
        if row is None:
            raise APIKeyNotFound("no api key has this fingerprint")
        return _key(row)

    def list_api_keys_by_user_id(self, user_id: str) -> list[APIKey]:
        user_id = check_id(user_id, "user_id")
        stmt = (
            sa.select(api_keys)
            .where(_K.user_id == user_id)
            .order_by(_K.created_at.desc(), _K.id.desc())
        )
        with self._read() as conn:
            return [_key(row) for row in conn.execute(stmt)]

    def list_api_keys_page(
        self, user_id: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[APIKey]:
        user_id = check_id(user_id, "user_id")
        stmt = sa.select(api_keys).where(_K.user_id == user_id)
        with self._read() as conn:
            page = read_page(conn, stmt, _K.id, limit=limit, cursor=cursor)
        return Page([_key(r) for r in page.items], page.next_cursor)

    def update_api_key_last_used(self, key_id: str) -> APIKey:
        key_id = check_id(key_id, "api key id")
        now = now_param(utc_now())
        stmt = (
            sa.update(api_keys)
            .where(_K.id == key_id)
            .values(last_used=not_before(_K.last_used, now))
            .returning(*api_keys.c)
        )
        with self._write() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise APIKeyNotFound(f"api key {key_id} not found")
        return _key(row)

    def delete_api_key(self, key_id: str, *, force: bool = False) -> None:
        key_id = check_id(key_id, "api key id")
        refuse = None if force else self._refuse_losing_admin_key
        self._delete_guarded(api_keys, key_id, "api key", APIKeyNotFound, refuse)

    def _delete_guarded(
        self,
        table: sa.Table,
        id_: str,
        what: str,
        missing: type[NotFoundError],
        refuse: Callable[[Connection, str], None] | None,
    ) -> None:
        """Delete one row under the admin lock, after ``refuse`` (the last-admin rule) passes."""
        with self._write() as conn:
            self._db.driver.serialize(conn, _ADMIN_LOCK)
            if refuse is not None:
                refuse(conn, id_)
            self._delete(conn, table, id_, what, missing)

    # Admin access: at least one admin, and, if an admin has an API key, an admin with a key.
    # Callers hold _ADMIN_LOCK, so the counts cannot change before their write commits.

    def _refuse_losing_admin(self, conn: Connection, user_id: str, doing: str) -> None:
        """``LastAdmin`` if ``user_id`` is the only admin, or holds the last admin keys."""
        user = conn.execute(sa.select(_U.email, _U.role).where(_U.id == user_id)).first()
        if user is None or user.role != _ADMIN:
            return
        others = sa.select(sa.func.count()).where(_U.role == _ADMIN, _U.id != user_id)
        if not conn.execute(others).scalar_one():
            raise LastAdmin(
                f"user {user_id} ({user.email}) is the only admin; {doing} them would leave "
                "nobody to manage users and API keys: make another user admin first"
            )
        own_keys = sa.select(sa.func.count()).where(_K.user_id == user_id)
        if conn.execute(own_keys).scalar_one() and not self._admin_keys(
            conn, _K.user_id != user_id
        ):
            raise LastAdmin(
                f"user {user_id} ({user.email}) holds the only admin API keys; {doing} them "
                "would lock every admin out: create a key for another admin first"
            )

    def _refuse_losing_admin_key(self, conn: Connection, key_id: str) -> None:
        """``LastAdmin`` if ``key_id`` is the last API key that any admin holds."""
        owner = conn.execute(
            sa.select(_U.id, _U.email)
            .join_from(api_keys, users)
            .where(_K.id == key_id, _U.role == _ADMIN)
        ).first()
        if owner is not None and not self._admin_keys(conn, _K.id != key_id):
            raise LastAdmin(
                f"api key {key_id} is the last API key of an admin ({owner.email}); deleting it "
                "would lock every admin out: create another admin key first"
            )

    @staticmethod
    def _admin_keys(conn: Connection, condition: sa.ColumnElement[bool]) -> int:
        """How many API keys that admins hold meet ``condition``."""
        stmt = (
            sa.select(sa.func.count())
            .select_from(api_keys.join(users))
            .where(_U.role == _ADMIN, condition)
        )
        return int(conn.execute(stmt).scalar_one())

    # A user and an API key, by id: ``check_id`` names the id "<what> id", and ``missing`` says
    # "<what> <id> not found".

    def _by_id(
        self, table: sa.Table, row_id: str, what: str, missing: type[NotFoundError]
    ) -> Row[Any]:
        row_id = check_id(row_id, f"{what} id")
        stmt = sa.select(table).where(table.c.id == row_id)
        with self._read() as conn:
            row: Row[Any] | None = conn.execute(stmt).first()
        if row is None:
            raise missing(f"{what} {row_id} not found")
        return row

    @staticmethod
    def _delete(
        conn: Connection, table: sa.Table, row_id: str, what: str, missing: type[NotFoundError]
    ) -> None:
        deleted = conn.execute(sa.delete(table).where(table.c.id == row_id)).rowcount
        if not deleted:
            raise missing(f"{what} {row_id} not found")

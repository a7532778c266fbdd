"""Users, API keys and the auth repository protocol."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from compozy.core import DEFAULT_PAGE_SIZE, Page, Role, new_id
from compozy.core.values import (
    check_enum,
    check_id,
    check_optional_timestamp,
    check_text,
)
from compozy.errors import ValidationError

__all__ = ["APIKey", "AuthRepository", "Role", "User", "email_key"]

MAX_EMAIL_LENGTH = 320
FINGERPRINT_LENGTH = 32  # SHA-256


def email_key(email: str) -> str:
    """The form two emails are compared in: Unicode NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", email).casefold()


def _check_email(value: Any) -> str:
    email = check_text(value, "email", allow_empty=True).strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(f"email {email!r} is not an address of the form name@domain")
    if any(ch.isspace() for ch in email):
        raise ValidationError(f"email {email!r} contains whitespace")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValidationError(f"email is {len(email)} characters long; the limit is 320")
    return email


@dataclass(kw_only=True)
class User:
    """A person or service that owns API keys."""

    id: str = field(default_factory=new_id)
    email: str
    role: Role = Role.USER
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        self.role = check_enum(Role, self.role, "role")

    def validate(self) -> None:
        """Normalise and check every field; raise ``ValidationError`` naming the bad one."""
        self.id = check_id(self.id, "user id")
        self.email = _check_email(self.email)
        self.role = check_enum(Role, self.role, "role")
        self.created_at = check_optional_timestamp(self.created_at, "created_at")


@dataclass(kw_only=True)
class APIKey:
    """A stored API key: never the plaintext, only a bcrypt hash and a SHA-256 fingerprint."""

    id: str = field(default_factory=new_id)
    user_id: str
    prefix: str
    hash: bytes = field(repr=False)
    fingerprint: bytes = field(repr=False)
    created_at: datetime | None = None
    last_used: datetime | None = None

    def validate(self) -> None:
        """Normalise and check every field; raise ``ValidationError`` naming the bad one."""
        self.id = check_id(self.id, "api key id")
        self.user_id = check_id(self.user_id, "user_id")
        self.prefix = check_id(self.prefix, "prefix")
        if not isinstance(self.hash, bytes) or not self.hash:
            raise ValidationError(f"api key {self.id}: hash must be non-empty bytes")
        if not isinstance(self.fingerprint, bytes) or len(self.fingerprint) != FINGERPRINT_LENGTH:
            raise ValidationError(
                f"api key {self.id}: fingerprint must be the 32-byte SHA-256 of the plaintext key"
            )
        self.created_at = check_optional_timestamp(self.created_at, "created_at")
        self.last_used = check_optional_timestamp(self.last_used, "last_used")


class AuthRepository(Protocol):
    """Persistence of users and API keys; lists are newest first (created_at DESC, id DESC)."""

    def create_user(self, user: User) -> User:
        """Insert a user; ``EmailExists`` when the email is taken (case-insensitively)."""
        ...

    def get_user_by_id(self, user_id: str) -> User:
        """``UserNotFound`` when missing."""
        ...

    def get_user_by_email(self, email: str) -> User:
        """Match case-insensitively; ``UserNotFound`` when missing."""
        ...

    def list_users(self) -> list[User]:
        """Every user, newest first."""
        ...

    def list_users_page(
        self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[User]:
        """One page of users, newest first (created_at DESC, id DESC), keyset-paged."""
        ...

    def update_user(self, user: User) -> User:
        """Update email and role; ``UserNotFound``, ``EmailExists``, and ``LastAdmin`` for
        demoting the only admin, or the admin who holds every admin key."""
        ...

    def delete_user(self, user_id: str, *, force: bool = False) -> None:
        """Delete the user and their keys; ``UserNotFound``. ``LastAdmin`` unless ``force``
        when they are the only admin, or hold every admin key: someone must stay able to manage
        users (checked and deleted in one transaction, so two racing deletes cannot both pass)."""
        ...

    def create_initial_admin_if_none(self, user: User) -> User:
        """Atomically create ``user`` as admin unless an admin exists (``AlreadyBootstrapped``)."""
        ...

    def create_api_key(self, key: APIKey) -> APIKey:
        """``ConstraintViolation`` for an unknown user, ``DuplicateKey`` for a taken key."""
        ...

    def get_api_key_by_id(self, key_id: str) -> APIKey:
        """``APIKeyNotFound`` when missing."""
        ...

    def get_api_key_by_fingerprint(self, fingerprint: bytes) -> APIKey:
        """``APIKeyNotFound`` when missing."""
        ...

    def list_api_keys_by_user_id(self, user_id: str) -> list[APIKey]:
        """The user's keys, newest first."""
        ...

    def list_api_keys_page(
        self, user_id: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[APIKey]:
        """One page of the user's keys, newest first (created_at DESC, id DESC), keyset-paged."""
        ...

    def update_api_key_last_used(self, key_id: str) -> APIKey:
        """Set last_used to now unless it is already later; ``APIKeyNotFound``."""
        ...

    def delete_api_key(self, key_id: str, *, force: bool = False) -> None:
        """``APIKeyNotFound`` when missing; ``LastAdmin`` unless ``force`` when it is the last
        API key that any admin holds (checked and deleted in one transaction)."""
        ...

"""``compozy users list|create|delete`` and ``compozy keys create|list|revoke``.

These commands work on the database directly, through the config and the database flags (as
``compozy migrate`` does), not through the HTTP API: whoever can read the config can manage users
and keys without one, and so get back in when no admin key is left (``compozy keys create --user
EMAIL`` for an admin). A user is named by id or email; a key by id, prefix or the whole key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer

from compozy.auth import APIKey, Role, User
from compozy.auth.keys import fingerprint, new_api_key
from compozy.cli.runtime import ConfigFlags, config_options, existing_store
from compozy.core.values import format_timestamp
from compozy.errors import APIKeyNotFound, LastAdmin
from compozy.store import Store

__all__ = ["keys_app", "users_app"]

_CONTEXT = {"help_option_names": ["-h", "--help"]}
users_app = typer.Typer(
    help="List, create and delete users, on the database directly (no API key needed).",
    context_settings=_CONTEXT,
)
keys_app = typer.Typer(
    help="Create, list and revoke API keys, on the database directly (no API key needed).",
    context_settings=_CONTEXT,
)

UserRef = Annotated[str, typer.Argument(metavar="USER", help="The user's email or id.")]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Also when no admin could sign in afterwards (the CLI can always make a new key).",
    ),
]
_WHOLE_KEY = re.compile(r"cpzy_[A-Za-z0-9]+_[A-Za-z0-9]+")
_KEY_SHOWN_ONCE = (
    "This API key is shown only this once and cannot be recovered; store it safely now."
)


@contextmanager
def _store(flags: ConfigFlags) -> Iterator[Store]:
    with existing_store(flags.load().database) as store:
        yield store


def _user(store: Store, ref: str) -> User:
    """The user ``ref`` names: an email (it has an @) or an id; ``UserNotFound`` otherwise."""
    if "@" in ref:
        return store.auth.get_user_by_email(ref)
    return store.auth.get_user_by_id(ref)


def _key(store: Store, ref: str) -> APIKey:
    """The key ``ref`` names: the whole key, its id or its prefix."""
    if _WHOLE_KEY.fullmatch(ref.strip()):
        return store.auth.get_api_key_by_fingerprint(fingerprint(ref.strip()))
    try:
        return store.auth.get_api_key_by_id(ref)
    except APIKeyNotFound:
        for user in store.auth.list_users():
            for key in store.auth.list_api_keys_by_user_id(user.id):
                if key.prefix == ref:
                    return key
    raise APIKeyNotFound(f"no api key has the id or prefix {ref!r}")


def _when(value: datetime | None) -> str:
    return "-" if value is None else format_timestamp(value)


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _way_back(email: str, *, new_admin: bool) -> str:
    """What gets an operator back in after a forced delete."""
    if new_admin:
        return (
            f"`compozy users create {email} --role admin` then `compozy keys create --user {email}`"
        )
    return f"`compozy keys create --user {email}`"


def _admin_can_sign_in(store: Store) -> bool:
    """True when some admin has an API key."""
    admins = [user for user in store.auth.list_users() if user.role is Role.ADMIN]
    return any(store.auth.list_api_keys_by_user_id(admin.id) for admin in admins)


def _warn_locked_out(way_back: str) -> None:
    typer.echo(f"warning: no admin can sign in now; get back in with {way_back}", err=True)


# --- users ---------------------------------------------------------------------------------------


@users_app.command("list")
@config_options
def list_users(*, flags: ConfigFlags) -> None:
    """List users, newest first, with their role and number of API keys."""
    with _store(flags) as store:
        users = store.auth.list_users()
        rows = [
            (
                user.id,
                user.email,
                user.role.value,
                str(len(store.auth.list_api_keys_by_user_id(user.id))),
                _when(user.created_at),
            )
            for user in users
        ]
    if not rows:
        typer.echo(
            "no users yet; create the first admin with `compozy users create EMAIL --role admin`",
            err=True,
        )
        return
    _echo_table(("ID", "EMAIL", "ROLE", "KEYS", "CREATED"), rows)


@users_app.command("create")
@config_options
def create_user(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The new user's email.")],
    role: Annotated[
        Role,
        typer.Option("--role", case_sensitive=False, help="admin manages users and keys."),
    ] = Role.USER,
    *,
    flags: ConfigFlags,
) -> None:
    """Create a user (give them a key with `compozy keys create --user EMAIL`)."""
    User(email=email, role=role).validate()  # a bad email is refused before the database opens
    with _store(flags) as store:
        user = store.auth.create_user(User(email=email, role=role))
    typer.echo(f"created {user.role.value} {user.email} (user {user.id})")
    typer.echo(f"next: compozy keys create --user {user.email}", err=True)


@users_app.command("delete")
@config_options
def delete_user(user: UserRef, force: Force = False, *, flags: ConfigFlags) -> None:
    """Delete a user and their API keys (refused for the last admin, unless --force)."""
    with _store(flags) as store:
        found = _user(store, user)
        keys = len(store.auth.list_api_keys_by_user_id(found.id))
        try:
            store.auth.delete_user(found.id, force=force)
        except LastAdmin as exc:
            raise LastAdmin(
                f"{exc}; or pass --force and get back in with {_way_back('EMAIL', new_admin=True)}"
            ) from None
        locked_out = found.role is Role.ADMIN and not _admin_can_sign_in(store)
    typer.echo(f"deleted user {found.id} ({found.email}) and {_count(keys, 'API key')}")
    if locked_out:
        _warn_locked_out(_way_back("EMAIL", new_admin=True))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- keys ----------------------------------------------------------------------------------------


@keys_app.command("create")
@config_options
def create_key(
    user: Annotated[
        str, typer.Option("--user", metavar="USER", help="The key's owner: email or id.")
    ],
    *,
    flags: ConfigFlags,
) -> None:
    """Create an API key; the key alone goes to stdout, once (`KEY=$(compozy keys create ...)`)."""
    with _store(flags) as store:
        owner = _user(store, user)
        key, plaintext = new_api_key(owner.id)
        stored = store.auth.create_api_key(key)
    typer.echo(plaintext)
    typer.echo(
        f"created API key {stored.id} (prefix {stored.prefix}) for {owner.role.value} "
        f"{owner.email}. {_KEY_SHOWN_ONCE}",
        err=True,
    )


OwnerFilter = Annotated[
    str | None,
    typer.Option("--user", metavar="USER", help="Only this user's keys: email or id."),
]


@keys_app.command("list")
@config_options
def list_keys(
    user: OwnerFilter = None,
    *,
    flags: ConfigFlags,
) -> None:
    """List API keys (never the keys themselves), newest first per user."""
    with _store(flags) as store:
        owners = [_user(store, user)] if user is not None else store.auth.list_users()
        rows = [
            (key.id, key.prefix, owner.email, _when(key.created_at), _when(key.last_used))
            for owner in owners
            for key in store.auth.list_api_keys_by_user_id(owner.id)
        ]
    if not rows:
        typer.echo("no API keys", err=True)
        return
    _echo_table(("ID", "PREFIX", "USER", "CREATED", "LAST USED"), rows)


@keys_app.command("revoke")
@config_options
def revoke_key(
    key: Annotated[
        str, typer.Argument(metavar="KEY", help="The key's id, its prefix, or the whole key.")
    ],
    force: Force = False,
    *,
    flags: ConfigFlags,
) -> None:
    """Delete an API key (refused for the last admin key, unless --force)."""
    with _store(flags) as store:
        found = _key(store, key)
        owner = store.auth.get_user_by_id(found.user_id)
        try:
            store.auth.delete_api_key(found.id, force=force)
        except LastAdmin as exc:
            raise LastAdmin(
                f"{exc}; or pass --force and get back in with "
                f"{_way_back(owner.email, new_admin=False)}"
            ) from None
        locked_out = owner.role is Role.ADMIN and not _admin_can_sign_in(store)
    typer.echo(f"revoked API key {found.id} (prefix {found.prefix}) of {owner.email}")
    if locked_out:
        _warn_locked_out(_way_back(owner.email, new_admin=False))

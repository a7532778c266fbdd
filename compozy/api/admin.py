"""Admin routes: users and their API keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.types import DecoratedCallable

from compozy.api.deps import ApiContext, AuthDependencies, IdPath, error_responses
from compozy.api.models import (
    APIKeyPage,
    CreatedAPIKey,
    CreateUserRequest,
    PageQuery,
    UserOut,
    UserPage,
)
from compozy.api.serialize import api_key_page_out, created_api_key_out, user_out, user_page_out
from compozy.auth import User
from compozy.auth.keys import new_api_key

__all__ = ["admin_router"]


def admin_router(ctx: ApiContext, auth: AuthDependencies) -> APIRouter:
    """The routes under ``/api/v0`` that manage users and keys (admin keys only)."""
    router = APIRouter(prefix="/api/v0", tags=["admin"], dependencies=[Depends(auth.admin)])

    def delete_route(
        path: str, *, summary: str
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        # Both deletes answer 204 with no body, 404 when there is nothing to delete, and 409
        # (LastAdmin) when the delete would leave no admin able to sign in.
        return router.delete(
            path,
            status_code=204,
            response_class=Response,
            summary=summary,
            responses=error_responses(401, 403, 404, 409, 422, 503),
        )

    @router.post(
        "/users",
        status_code=201,
        summary="Create a user",
        responses=error_responses(400, 401, 403, 409, 422, 503),
    )
    def create_user(body: CreateUserRequest) -> UserOut:
        """A new user; 409 when the email is taken (compared case-insensitively)."""
        return user_out(ctx.store.auth.create_user(User(email=body.email, role=body.role)))

    @router.get(
        "/users",
        summary="List users, newest first, a page at a time",
        responses=error_responses(401, 403, 422, 503),
    )
    def list_users(query: Annotated[PageQuery, Query()]) -> UserPage:
        """Users ordered by created_at, then id, descending; pass the page's `next_cursor` as
        `cursor` for the next one."""
        return user_page_out(ctx.store.auth.list_users_page(limit=query.limit, cursor=query.cursor))

    @delete_route("/users/{user_id}", summary="Delete a user and their API keys")
    def delete_user(user_id: IdPath) -> None:
        """Delete the user; their keys go with them and stop working at once. 409 `LastAdmin`
        for the only admin, or the admin who holds every admin key."""
        ctx.store.auth.delete_user(user_id)

    @router.post(
        "/users/{user_id}/api-keys",
        status_code=201,
        summary="Create an API key for a user",
        responses=error_responses(401, 403, 404, 409, 422, 503),
    )
    def create_api_key(user_id: IdPath, response: Response) -> CreatedAPIKey:
        """A new key; its plaintext is in this response and nowhere else, ever."""
        ctx.store.auth.get_user_by_id(user_id)  # UserNotFound (404) before paying for bcrypt
        key, plaintext = new_api_key(user_id, bcrypt_rounds=ctx.bcrypt_rounds)
        stored = ctx.store.auth.create_api_key(key)
        # The body holds a secret: no cache on the way may keep a copy.
        response.headers["Cache-Control"] = "no-store"
        return created_api_key_out(stored, plaintext)

    @router.get(
        "/users/{user_id}/api-keys",
        summary="List a user's API keys, newest first, a page at a time",
        responses=error_responses(401, 403, 404, 422, 503),
    )
    def list_api_keys(user_id: IdPath, query: Annotated[PageQuery, Query()]) -> APIKeyPage:
        """The user's keys (metadata only), ordered by created_at, then id, descending; pass the
        page's `next_cursor` as `cursor` for the next one."""
        ctx.store.auth.get_user_by_id(user_id)  # 404 for an unknown user, not an empty list
        page = ctx.store.auth.list_api_keys_page(user_id, limit=query.limit, cursor=query.cursor)
        return api_key_page_out(page)

    @delete_route("/api-keys/{key_id}", summary="Delete an API key")
    def delete_api_key(key_id: IdPath) -> None:
        """Delete the key; requests with it are refused from the next one on. 409 `LastAdmin`
        for the last key that any admin holds: create another admin key first."""
        ctx.store.auth.delete_api_key(key_id)

    return router

"""Who is calling: `GET /auth-status` (is this key valid?) and `GET /users/me`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from api import store
from api.auth import Authenticated, bearer
from api.context import Context
from api.errors import ERRORS
from api.keys import lookup_key
from api.schemas import AuthStatus, UserResponse, UserView
from api.unicode import UnicodeRoute

router = APIRouter(route_class=UnicodeRoute, tags=["account"])


@router.get("/auth-status", response_model=AuthStatus, summary="Check an API key")
async def auth_status(
    context: Context, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> JSONResponse:
    """`{"authenticated": true}` if the bearer key is valid, false otherwise (never a 401)."""
    valid = bool(credentials and credentials.credentials) and (
        await context.db(lookup_key, context.database, credentials.credentials) is not None  # type: ignore[union-attr]
    )
    return JSONResponse(AuthStatus(authenticated=valid).model_dump())


@router.get("/users/me", response_model=UserResponse, responses=ERRORS, summary="The current user")
async def me(context: Context, principal: Authenticated) -> JSONResponse:
    user, organization = await context.db(
        store.get_user, context.database, principal.organization_id, principal.user_id
    )
    # Keys made by `outdial apikey create` always have a user; an older or hand-made key shows as itself.
    since = user.created_at if user else organization.created_at if organization else None
    view = UserView(
        id=user.id if user else f"apikey_{principal.api_key_id}",
        created_at=since,
        email=user.email if user else "",
        first_name=user.first_name if user else None,
        last_name=user.last_name if user else None,
        organization_id=principal.organization_id,
        updated_at=user.updated_at if user else since,
        organization_country=organization.country if organization else None,
    )
    return JSONResponse({"user": view.model_dump(mode="json")})

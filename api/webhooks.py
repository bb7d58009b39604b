"""outdial's own routes for webhook signing (not part of the Revox API, so not in its client):
`GET /webhook-secret` shows the organization's secret, `POST /webhook-secret/rotate` replaces it (the
previous one keeps signing for 24 h). Receivers verify `Outdial-Signature` with it (README)."""

from __future__ import annotations

from fastapi import APIRouter

from activities.webhook_secrets import (
    WebhookSecretInfo,
    WebhookSecretPinned,
    rotate_webhook_secret,
    show_webhook_secret,
)
from api.auth import Authenticated
from api.context import Context
from api.errors import ERRORS, ApiError, ErrorBody
from api.unicode import UnicodeRoute

router = APIRouter(route_class=UnicodeRoute, tags=["webhooks (outdial)"])


@router.get(
    "/webhook-secret",
    response_model=WebhookSecretInfo,
    responses=ERRORS,
    summary="The organization's webhook signing secret",
)
async def get_webhook_secret(context: Context, principal: Authenticated) -> WebhookSecretInfo:
    return await context.db(
        show_webhook_secret, context.settings, context.database, principal.organization_id
    )


@router.post(
    "/webhook-secret/rotate",
    response_model=WebhookSecretInfo,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "Pinned by OUTDIAL_WEBHOOK_SECRET"}},
    summary="Replace the webhook signing secret (the previous one signs too for 24 h)",
)
async def rotate(context: Context, principal: Authenticated) -> WebhookSecretInfo:
    try:
        return await context.db(
            rotate_webhook_secret, context.settings, context.database, principal.organization_id
        )
    except WebhookSecretPinned as err:
        raise ApiError(409, "conflict", str(err)) from None

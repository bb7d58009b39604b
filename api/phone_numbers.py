"""Phone numbers: the organization's caller ids, each with the LiveKit outbound trunk that dials from
it. Orders and assistants may only use these numbers (422 otherwise)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from activities.persistence import phone_numbers_of
from api import store
from api.assistants import view as assistant_json
from api.auth import Authenticated
from api.context import Context
from api.errors import ERRORS, ApiError, ErrorBody, not_found, unprocessable
from api.schemas import (
    PhoneNumberCreateParams,
    PhoneNumberListResponse,
    PhoneNumberResponse,
    PhoneNumberUpdateParams,
    PhoneNumberView,
    Success,
)
from api.unicode import UnicodeRoute
from models.settings import Settings
from models.tables import Database, PhoneNumberRecord, utcnow

router = APIRouter(route_class=UnicodeRoute, tags=["phone numbers"])


def view(database: Database, record: PhoneNumberRecord) -> dict[str, Any]:
    inbound = None
    if record.inbound_assistant_id:
        assistant = store.get_assistant(database, record.organization_id, record.inbound_assistant_id)
        inbound = assistant_json(assistant) if assistant else None
    return PhoneNumberView(
        id=record.id,
        created_at=record.created_at,
        inbound_assistant=inbound,
        label=record.label,
        livekit_outbound_trunk_id=record.livekit_outbound_trunk_id,
        phone_number=record.phone_number,
        provider=record.provider,  # type: ignore[arg-type]
        source=record.source,  # type: ignore[arg-type]
        type=record.type,  # type: ignore[arg-type]
    ).model_dump(mode="json")


def _list(database: Database, organization_id: str) -> list[dict[str, Any]]:
    return [view(database, record) for record in phone_numbers_of(database, organization_id)]


@router.get(
    "/phone-numbers", response_model=PhoneNumberListResponse, responses=ERRORS, summary="List phone numbers"
)
async def list_phone_numbers(context: Context, principal: Authenticated) -> JSONResponse:
    numbers = await context.db(_list, context.database, principal.organization_id)
    return JSONResponse({"phone_numbers": numbers})


def _add(
    database: Database, settings: Settings, organization_id: str, params: PhoneNumberCreateParams
) -> dict[str, Any]:
    now = utcnow()
    record = store.add_phone_number(
        database,
        PhoneNumberRecord(
            id=store.new_id(),
            organization_id=organization_id,
            phone_number=params.phone_number,
            label=params.label,
            livekit_outbound_trunk_id=params.livekit_outbound_trunk_id,
            created_at=now,
            updated_at=now,
        ),
        shared=(settings.default_from_phone_number, settings.livekit_sip_outbound_trunk_id or None),
    )
    if record is None:
        raise ApiError(409, "conflict", f"{params.phone_number} is already one of the organization's numbers")
    return view(database, record)


@router.post(
    "/phone-numbers",
    response_model=PhoneNumberResponse,
    responses={
        **ERRORS,
        409: {"model": ErrorBody, "description": "The number is already there, or another organization's"},
    },
    summary="Add a phone number (outdial)",
)
async def add_phone_number(
    params: PhoneNumberCreateParams, context: Context, principal: Authenticated
) -> JSONResponse:
    """Register a caller id the organization owns and the LiveKit outbound trunk that dials from it.
    (Revox provisions numbers itself; outdial imports yours, so this endpoint is outdial's own.)"""
    number = await context.db(_add, context.database, context.settings, principal.organization_id, params)
    return JSONResponse({"phone_number": number})


def _update(
    database: Database,
    settings: Settings,
    organization_id: str,
    number_id: str,
    params: PhoneNumberUpdateParams,
) -> dict[str, Any]:
    record = store.get_phone_number(database, organization_id, number_id)
    if record is None:
        raise not_found("phone number", number_id)
    changes = params.model_dump(exclude_unset=True)
    assistant_id = changes.get("inbound_assistant_id")
    if assistant_id is not None and store.get_assistant(database, organization_id, assistant_id) is None:
        raise unprocessable("inbound_assistant_id", f"assistant {assistant_id} not found")
    shared = settings.livekit_sip_outbound_trunk_id  # the default trunk is everyone's
    updated = store.update_phone_number(database, record, changes, shared_trunk=shared)
    if updated is None:  # deleted since it was read
        raise not_found("phone number", number_id)
    return view(database, updated)


@router.patch(
    "/phone-numbers/{id}",
    response_model=PhoneNumberResponse,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "The trunk dials another organization's"}},
    summary="Update a phone number",
)
async def update_phone_number(
    id: str, params: PhoneNumberUpdateParams, context: Context, principal: Authenticated
) -> JSONResponse:
    """Set its label, inbound assistant (null clears) or LiveKit outbound trunk."""
    number = await context.db(
        _update, context.database, context.settings, principal.organization_id, id, params
    )
    return JSONResponse({"phone_number": number})


@router.delete(
    "/phone-numbers/{id}", response_model=Success, responses=ERRORS, summary="Delete a phone number"
)
async def delete_phone_number(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """New orders can no longer call from it; orders already placed keep dialing from it."""
    if not await context.db(store.delete_phone_number, context.database, principal.organization_id, id):
        raise not_found("phone number", id)
    return JSONResponse(Success().model_dump())

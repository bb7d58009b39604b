"""Assistants: saved configurations an order refers to by `assistant_id`. Validated by the seed's
`Assistant` model (plus a name); `from_phone_number` must be one of the organization's numbers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from activities.persistence import UnknownCallerId, assistant_view, caller_ids, resolve_caller_id
from api import campaign_store, store
from api.auth import Authenticated
from api.context import Context
from api.errors import ERRORS, ApiError, errors, not_found, unprocessable, validate_body
from api.schemas import (
    AssistantCreateParams,
    AssistantListResponse,
    AssistantResponse,
    AssistantView,
    Success,
)
from api.unicode import UnicodeRoute
from models.settings import Settings
from models.tables import AssistantRecord, Database, utcnow

router = APIRouter(route_class=UnicodeRoute, tags=["assistants"])


def view(record: AssistantRecord) -> dict[str, Any]:
    """The assistant object of every /assistants response (the seed's shape + stt_model and type)."""
    return AssistantView.model_validate(assistant_view(record).model_dump()).model_dump(mode="json")


def _check_caller_id(
    database: Database, settings: Settings, organization_id: str, assistant: AssistantCreateParams
) -> None:
    """The same rule as for orders: one of the organization's numbers (or the default trunk's)."""
    if assistant.from_phone_number is None:
        return
    try:
        resolve_caller_id(
            caller_ids(database, organization_id),
            assistant.from_phone_number,
            settings.default_from_phone_number,
        )
    except UnknownCallerId as err:
        raise unprocessable("from_phone_number", str(err)) from None


# Every step of an order carries its assistant through Temporal: one over 2 MB (a payload's limit) was
# stored, and each of its orders stalled an hour in `initializing` before it errored; 50 attempts of one
# of 256 KB fill some 25 MB of Temporal's 50 MB history (measured), of one of 1 MB more than all of it.
MAX_ASSISTANT_BYTES = 256 * 1024


def refuse_too_large(assistant: BaseModel, **dump: Any) -> None:
    """A 413 for an assistant (stored, or an order's inline one) past MAX_ASSISTANT_BYTES of JSON as its
    orders carry it (every default filled in: a few bytes of request may be many of history)."""
    size = len(assistant.model_dump_json(**dump).encode())  # nulls included, as the steps carry it
    if size > MAX_ASSISTANT_BYTES:
        raise ApiError(
            413,
            "request_too_large",
            f"the assistant is too large: {size} bytes of JSON, at most {MAX_ASSISTANT_BYTES} (each step of "
            "its orders carries it through Temporal, whose histories stop at 50 MB)",
        )


def _config(assistant: AssistantCreateParams) -> dict[str, Any]:
    """The stored configuration; a 413 past MAX_ASSISTANT_BYTES of JSON."""
    refuse_too_large(assistant, exclude={"name"})
    return assistant.model_dump(mode="json", exclude_none=True, exclude={"name"})


def _create(
    database: Database, settings: Settings, organization_id: str, assistant: AssistantCreateParams
) -> AssistantRecord:
    _check_caller_id(database, settings, organization_id, assistant)
    now = utcnow()
    record = AssistantRecord(
        id=store.new_id(),
        organization_id=organization_id,
        name=assistant.name,
        config=_config(assistant),
        created_at=now,
        updated_at=now,
    )
    return store.save_assistant(database, record)


def _owned(database: Database, organization_id: str, assistant_id: str) -> AssistantRecord:
    record = store.get_assistant(database, organization_id, assistant_id)
    if record is None:
        raise not_found("assistant", assistant_id)
    return record


@router.post("/assistants", response_model=AssistantResponse, responses=ERRORS, summary="Create an assistant")
async def create_assistant(
    assistant: AssistantCreateParams, context: Context, principal: Authenticated
) -> JSONResponse:
    record = await context.db(
        _create, context.database, context.settings, principal.organization_id, assistant
    )
    return JSONResponse({"assistant": view(record)})


@router.get("/assistants", response_model=AssistantListResponse, responses=ERRORS, summary="List assistants")
async def list_assistants(context: Context, principal: Authenticated) -> JSONResponse:
    records = await context.db(store.list_assistants, context.database, principal.organization_id)
    return JSONResponse({"assistants": [view(record) for record in records]})


@router.get("/assistants/{id}", response_model=AssistantView, responses=ERRORS, summary="Get an assistant")
async def retrieve_assistant(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """The assistant itself, unwrapped (as the official client expects)."""
    record = await context.db(_owned, context.database, principal.organization_id, id)
    return JSONResponse(view(record))


def _update(
    database: Database, settings: Settings, organization_id: str, assistant_id: str, changes: dict[str, Any]
) -> AssistantRecord:
    def write(record: AssistantRecord) -> AssistantRecord | None:
        stored = _without_the_old_lists_choice(record.config, changes)
        known = {key: value for key, value in stored.items() if key in AssistantCreateParams.model_fields}
        assistant = validate_body(AssistantCreateParams, {**known, "name": record.name, **changes})
        _check_caller_id(database, settings, organization_id, assistant)
        values = {"name": assistant.name, "config": _config(assistant)}
        return store.update_if_unchanged(database, record, values)

    updated = store.updating(lambda: _owned(database, organization_id, assistant_id), write, "assistant")
    campaign_store.refresh_rows_of(database, settings, organization_id, updated.id)
    return updated


def _without_the_old_lists_choice(config: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """New `transfer_destinations` (or null) without a `transfer_phone_number` (the official client
    cannot send one): the stored number stays only if it is one of the new destinations, so otherwise
    the new list's first is the transfer number, and null or [] turns transfer off (it kept transferring
    to the old first, and a list without it was refused)."""
    if "transfer_destinations" not in changes or "transfer_phone_number" in changes:
        return config
    new = changes["transfer_destinations"] or []
    numbers = {d.get("phone_number") for d in new if isinstance(d, dict)}
    if config.get("transfer_phone_number") in numbers:
        return config
    return {key: value for key, value in config.items() if key != "transfer_phone_number"}


@router.patch(
    "/assistants/{id}", response_model=AssistantResponse, responses=errors(409), summary="Update an assistant"
)
async def update_assistant(
    id: str,
    context: Context,
    principal: Authenticated,
    changes: Annotated[
        dict[str, Any],
        Body(description="Any fields of the assistant; given fields replace the stored ones (null clears)."),
    ],
) -> JSONResponse:
    """Partial update: the result is validated as a whole, exactly like a create; the rows of its
    campaigns not started yet show (and keep) the new version when it answers."""
    record = await context.db(
        _update, context.database, context.settings, principal.organization_id, id, changes
    )
    return JSONResponse({"assistant": view(record)})


@router.delete("/assistants/{id}", response_model=Success, responses=ERRORS, summary="Delete an assistant")
async def delete_assistant(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Orders already placed keep the copy of the assistant they resolved."""
    if not await context.db(store.delete_assistant, context.database, principal.organization_id, id):
        raise not_found("assistant", id)
    return JSONResponse(Success().model_dump())


def _clone(
    database: Database, settings: Settings, organization_id: str, assistant_id: str
) -> AssistantRecord:
    """A copy named as the official client says, "suffixed by (Copy)", held to the rules of a new one
    (a caller id deleted since is refused, as creating it would be)."""
    source = _owned(database, organization_id, assistant_id)
    name = f"{source.name[: 200 - len(' (Copy)')]} (Copy)"  # a long name is shortened, never the suffix
    known = {key: value for key, value in source.config.items() if key in AssistantCreateParams.model_fields}
    _check_caller_id(
        database, settings, organization_id, validate_body(AssistantCreateParams, {**known, "name": name})
    )
    now = utcnow()
    copy = AssistantRecord(
        id=store.new_id(),
        organization_id=organization_id,
        name=name,
        config=dict(source.config),
        created_at=now,
        updated_at=now,
    )
    return store.save_assistant(database, copy)


@router.post(
    "/assistants/{id}/clone", response_model=AssistantResponse, responses=ERRORS, summary="Clone an assistant"
)
async def clone_assistant(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    record = await context.db(_clone, context.database, context.settings, principal.organization_id, id)
    return JSONResponse({"assistant": view(record)})

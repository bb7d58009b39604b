"""Campaigns (revox 0.5.0 `client.campaigns`): create a list, launch it, pause, resume, cancel, count.

Each good row is a call order of its own (its own timezone, windows, retries and outcome), started by
the campaign's `CampaignWorkflow` (id `campaign-<id>`), paced, all sharing the concurrency key
`campaign-<id>` with `max_concurrent_calls`. The API steers that workflow with signal-with-start, so
a campaign whose workflow has ended (everything launched) is reached the same way as a running one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError

from activities.persistence import find_assistant
from api import campaign_stats
from api import campaign_store as store
from api.assistants import view as assistant_view
from api.auth import Authenticated
from api.calls import refuse_far_future
from api.context import ApiContext, Context
from api.errors import ERRORS, ApiError, errors
from api.schemas import Success
from api.unicode import UnicodeRoute
from models import Call, RetryConfigRecord, Timestamp
from models.campaign import (
    MAX_CONTACTS,
    CampaignCreateParams,
    CampaignInput,
    CampaignLaunchParams,
    CampaignLaunchResponse,
    CampaignPace,
    FunnelStats,
    RowSkip,
    RowStats,
    campaign_workflow_id,
)
from models.settings import Settings
from models.tables import CampaignRecord, Database, utcnow

router = APIRouter(route_class=UnicodeRoute, tags=["campaigns"])
WORKFLOW_TYPE = "CampaignWorkflow"


class CampaignView(BaseModel):
    """The official client's `Campaign`."""

    id: str
    assistant_id: str
    created_at: Timestamp
    is_cancelled: bool
    name: str
    organization_id: str
    status: str
    updated_at: Timestamp
    assistant: dict[str, Any] | None = None
    call_retry_config: RetryConfigRecord | None = None
    created_by: None = None
    from_phone_number: str | None = None
    funnel_stats: FunnelStats
    max_concurrent_calls: int
    metadata_keys: list[str]
    row_stats: RowStats
    scheduled_at: Timestamp = None
    structured_output_extraction: str = "none"


def retry_config_of(record: CampaignRecord, assistant_json: dict[str, Any] | None) -> dict[str, Any] | None:
    """The retry config the campaign's orders get: its own, else its assistant's."""
    return record.call_retry_config or (assistant_json or {}).get("call_retry_config")


def campaign_view(database: Database, record: CampaignRecord) -> dict[str, Any]:
    summary = campaign_stats.summarize(campaign_stats.row_facts(database, record.id))
    assistant = find_assistant(database, record.organization_id, record.assistant_id)
    assistant_json = assistant_view(assistant) if assistant else None
    retry = retry_config_of(record, assistant_json)
    return CampaignView(
        id=record.id,
        assistant_id=record.assistant_id,
        created_at=record.created_at,
        is_cancelled=record.is_cancelled,
        name=record.name,
        organization_id=record.organization_id,
        status=campaign_stats.campaign_status(record, summary),
        updated_at=record.updated_at,
        assistant=assistant_json,
        call_retry_config=RetryConfigRecord.model_validate(retry) if retry else None,
        from_phone_number=record.from_phone_number,
        funnel_stats=campaign_stats.funnel(summary),
        max_concurrent_calls=record.max_concurrent_calls,
        metadata_keys=record.metadata_keys,
        row_stats=summary.row_stats,
        scheduled_at=record.scheduled_at,
    ).model_dump(mode="json")


def workflow_input(
    settings: Settings, record: CampaignRecord, *, orders_paused: bool | None
) -> CampaignInput:
    return CampaignInput(
        campaign_id=record.id,
        organization_id=record.organization_id,
        paused=record.paused,
        steered=record.steered,
        orders_paused=orders_paused,
        pace=CampaignPace(rows_per_second=settings.campaign_rows_per_second, burst=settings.campaign_burst),
    )


async def signal_campaign(
    client: Client, settings: Settings, record: CampaignRecord, signal: str, *, orders_paused: bool | None
) -> None:
    """Signal the campaign's workflow, starting it if it does not run (signal-with-start); a pause or
    a resume carries its number (`set_flags`)."""
    try:
        await client.start_workflow(
            WORKFLOW_TYPE,
            workflow_input(settings, record, orders_paused=orders_paused),
            id=campaign_workflow_id(record.id),
            task_queue=settings.task_queue,
            start_signal=signal,
            start_signal_args=[record.steered] if signal in ("pause", "resume") else [],
            memo={"organization_id": record.organization_id},
            static_summary=f"campaign {record.name}",
        )
    except RPCError as err:
        raise ApiError(503, "unavailable", f"could not reach the campaign's workflow: {err.message}") from err


# --- the campaign ------------------------------------------------------------------------------------------


# Up to MAX_CONTACTS rows of about 1 KB each: above the API's 16 MB for any other body.
CAMPAIGN_MAX_BODY_BYTES = 128 * 1024 * 1024


@router.post(
    "/campaigns", responses=ERRORS, summary="Create a campaign", max_body_size=CAMPAIGN_MAX_BODY_BYTES
)
async def create_campaign(
    params: CampaignCreateParams, context: Context, principal: Authenticated
) -> JSONResponse:
    """Every good contact becomes a call in `not_launched` (nothing is dialed until launch-calls); bad
    rows (invalid, duplicate or do-not-contact numbers) are stored skipped and listed in `skipped_rows`."""
    record, skipped = await context.db(
        store.create_campaign, context.database, context.settings, principal.organization_id, params
    )
    body = {"campaign": await context.db(campaign_view, context.database, record)}
    return JSONResponse({**body, "skipped_rows": [skip.model_dump() for skip in skipped]})


@router.get("/campaigns", responses=ERRORS, summary="List campaigns")
async def list_campaigns(context: Context, principal: Authenticated) -> JSONResponse:
    def views() -> list[dict[str, Any]]:
        records = store.list_campaigns(context.database, principal.organization_id)
        return [campaign_view(context.database, record) for record in records]

    return JSONResponse({"campaigns": await context.db(views)})


@router.get("/campaigns/{id}", responses=ERRORS, summary="Get a campaign")
async def retrieve_campaign(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    record = await context.db(store.get_campaign, context.database, principal.organization_id, id)
    return JSONResponse({"campaign": await context.db(campaign_view, context.database, record)})


@router.patch("/campaigns/{id}", responses=errors(409), summary="Update a campaign")
async def update_campaign(
    id: str,
    context: Context,
    principal: Authenticated,
    changes: Annotated[
        dict[str, Any], Body(description="name, call_retry_config, from_phone_number, max_concurrent_calls")
    ],
) -> JSONResponse:
    """Applies to the rows not started yet (each page of rows is read with the campaign's settings)."""
    record = await context.db(
        store.update_campaign, context.database, context.settings, principal.organization_id, id, changes
    )
    return JSONResponse({"campaign": await context.db(campaign_view, context.database, record)})


@router.delete("/campaigns/{id}", response_model=Success, responses=ERRORS, summary="Delete a campaign")
async def delete_campaign(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """No new call is placed (rows not started are dropped, waiting orders cancelled; calls in
    progress finish); the calls already made stay in the call history."""
    await context.db(store.get_campaign, context.database, principal.organization_id, id)  # 404 first
    client = await context.temporal()
    await delete_campaign_of(client, context.settings, context.database, principal.organization_id, id)
    return JSONResponse(Success().model_dump())


async def delete_campaign_of(
    client: Client, settings: Settings, database: Database, organization_id: str, campaign_id: str
) -> None:
    """Cancel, then forget the campaign. The cancel is signalled however often it is asked, as by
    `steer_campaign`: a delete whose signal failed (a 503, retried) still stops the orders it started."""
    await steer_campaign(client, settings, database, organization_id, campaign_id, "cancel")
    record = await asyncio.to_thread(store.get_campaign, database, organization_id, campaign_id)
    await asyncio.to_thread(store.delete_campaign, database, record)


# --- launching and steering ------------------------------------------------------------------------------


@router.post(
    "/campaigns/{id}/launch-calls",
    response_model=CampaignLaunchResponse,
    responses=errors(409),
    summary="Launch a campaign's calls",
)
async def launch_calls(
    id: str, params: CampaignLaunchParams, context: Context, principal: Authenticated
) -> JSONResponse:
    """The selected rows not launched yet start (paced) as call orders at `scheduled_at` (or now),
    each then waiting for its own calling window; a row is never launched twice."""
    await context.db(store.get_campaign, context.database, principal.organization_id, id)  # 404 first
    refuse_far_future("scheduled_at", params.scheduled_at, utcnow())
    response = await launch_campaign(
        await context.temporal(), context.settings, context.database, principal.organization_id, id, params
    )
    return JSONResponse(response.model_dump())


async def steer_campaign(
    client: Client,
    settings: Settings,
    database: Database,
    organization_id: str,
    campaign_id: str,
    signal: str,
) -> None:
    """Record the request (paused / cancelled), then signal the campaign's workflow (starting it if
    it ended): it tells the orders. Shared by the API and the CLI. A cancel is signalled again however
    often it is asked: one recorded before its signal failed (a 503, which clients retry) would else
    never reach the workflow, and the campaign would call every row."""
    record = await asyncio.to_thread(store.get_campaign, database, organization_id, campaign_id)
    if record.is_cancelled and signal != "cancel":
        raise ApiError(409, "conflict", f"campaign {campaign_id} is cancelled")
    was_paused = record.paused
    if not record.is_cancelled:
        flags = {"cancelled": True} if signal == "cancel" else {"paused": signal == "pause"}
        record = await asyncio.to_thread(store.set_flags, database, record, **flags)
    try:
        await signal_campaign(client, settings, record, signal, orders_paused=None)
    except ApiError:
        if signal in ("pause", "resume"):  # not done (a 503): the campaign must not read as if it were,
            # its orders calling on under `paused` once Temporal is back (a retry records it again)
            await asyncio.to_thread(store.unsteer, database, record, paused=was_paused)
        raise


async def launch_campaign(
    client: Client, settings: Settings, database: Database, organization_id: str, campaign_id: str,
    params: CampaignLaunchParams,
) -> CampaignLaunchResponse:  # fmt: skip
    """Mark the selected rows pending, then signal `launch` (starting the workflow if needed)."""
    response = await asyncio.to_thread(
        store.select_for_launch, database, organization_id, campaign_id, params
    )
    record = await asyncio.to_thread(store.get_campaign, database, organization_id, campaign_id)
    await signal_campaign(client, settings, record, "launch", orders_paused=record.paused)
    return response


async def _steer(context: ApiContext, organization_id: str, campaign_id: str, signal: str) -> JSONResponse:
    await context.db(store.get_campaign, context.database, organization_id, campaign_id)  # 404 first
    await steer_campaign(
        await context.temporal(), context.settings, context.database, organization_id, campaign_id, signal
    )
    return JSONResponse(Success().model_dump())


@router.post(
    "/campaigns/{id}/pause", response_model=Success, responses=errors(409), summary="Pause a campaign"
)
async def pause_campaign(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """No new order starts and no new dial: calls in progress finish, then their orders wait."""
    return await _steer(context, principal.organization_id, id, "pause")


@router.post(
    "/campaigns/{id}/resume", response_model=Success, responses=errors(409), summary="Resume a campaign"
)
async def resume_campaign(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Held orders go on (a next attempt keeps its time while that is ahead, else it is in the next
    calling window); launching goes on."""
    return await _steer(context, principal.organization_id, id, "resume")


@router.post(
    "/campaigns/{id}/cancel", response_model=Success, responses=errors(409), summary="Cancel a campaign"
)
async def cancel_campaign(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Rows not started and waiting orders are cancelled; calls in progress finish first."""
    return await _steer(context, principal.organization_id, id, "cancel")


# --- rows and numbers ---------------------------------------------------------------------------------------


def row_view(row: Any, call: Any) -> dict[str, Any]:
    skip = (
        RowSkip(
            row_index=row.row_index,
            phone_number=row.phone_number,
            reason=row.skip_reason,
            message=row.skip_message or "",
        ).model_dump()
        if row.skip_reason
        else None
    )
    return {
        "id": row.id,
        "input_data": row.input_data or {},
        "phone_number": row.phone_number,
        "row_index": row.row_index,
        "call": Call.model_validate(call.call).model_dump(mode="json") if call else None,  # as GET /call
        "state": row.state,
        "skipped": skip,
    }


@router.get("/campaigns/{id}/rows", responses=ERRORS, summary="A campaign's rows")
async def get_rows(
    id: str,
    context: Context,
    principal: Authenticated,
    offset: Annotated[int, Query(ge=0, le=MAX_CONTACTS)] = 0,  # past the last row there is none
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    """Every row (or `limit` from `offset`) with its call as last persisted; skipped rows say why."""

    def render() -> bytes:  # on a thread: 20,000 rows took 4 s, which held every other request
        record = store.get_campaign(context.database, principal.organization_id, id)
        rows = store.rows_with_calls(context.database, record.id, offset=offset, limit=limit)
        return JSONResponse({"rows": [row_view(row, call) for row, call in rows]}).body

    return Response(await context.db(render), media_type="application/json")


@router.get("/campaigns/{id}/statistics", responses=ERRORS, summary="A campaign's statistics")
async def get_statistics(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """The funnel, outcomes and leads of the official client, plus `rows`: rows by status and by
    outcome, attempts, reached-human rate. From the calls as persisted at every state change."""

    def compute() -> dict[str, Any]:
        record = store.get_campaign(context.database, principal.organization_id, id)
        summary = campaign_stats.summarize(campaign_stats.row_facts(context.database, record.id))
        assistant = find_assistant(context.database, record.organization_id, record.assistant_id)
        fields = (
            [f["name"] for f in (assistant.config.get("structured_output_config") or [])] if assistant else []
        )
        return campaign_stats.statistics(
            context.database,
            record,
            summary,
            agent_name=assistant.name if assistant else None,
            fields=fields,
            retry=retry_config_of(record, assistant_view(assistant) if assistant else None) or {},
        )

    statistics = await context.db(compute)
    return JSONResponse({"statistics": jsonable_encoder(statistics)})


@router.get("/campaigns/{id}/export", responses=ERRORS, summary="Export a campaign's rows")
async def export_rows(id: str, context: Context, principal: Authenticated) -> Response:
    def render() -> bytes:  # on a thread, as the rows
        record = store.get_campaign(context.database, principal.organization_id, id)
        rows = store.rows_with_calls(context.database, record.id)
        text = campaign_stats.export_csv(rows, record.metadata_keys)
        filename = f"campaign-{record.id[:8]}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.csv"
        return JSONResponse({"csv": text, "filename": filename}).body

    return Response(await context.db(render), media_type="application/json")

"""Reading the organization's calls back from storage: search, the CSV export and the phone history.
They read the rows every order's workflow writes, so they work after its workflow closed and beyond
Temporal's retention (README, "The HTTP API")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from api import store
from api.auth import Authenticated
from api.context import Context
from api.errors import ERRORS
from api.schemas import (
    CallExportParams,
    CallExportResponse,
    CallFilters,
    CallSearchResponse,
    PhoneHistory,
    PhoneHistoryResponse,
)
from api.spreadsheet import as_text, csv_text
from api.store import ExportedCall
from api.unicode import UnicodeRoute
from models import Call
from models.common import in_the_clients_words
from models.tables import CallAttemptRecord, utcnow

router = APIRouter(route_class=UnicodeRoute, tags=["calls"])


@router.post("/call/search", response_model=CallSearchResponse, responses=ERRORS, summary="Search calls")
async def search_calls(filters: CallFilters, context: Context, principal: Authenticated) -> Response:
    """The organization's calls matching every given filter, a page at a time (pages count from 1)."""

    def page() -> bytes:  # each Call as GET /call/{id} answers it: one stored by an earlier version
        records, total = store.search_calls(context.database, principal.organization_id, filters)
        calls = [Call.model_validate(record.call).model_dump(mode="json") for record in records]
        return JSONResponse({"calls": calls, "total_count": total}).body  # gains the fields added since

    return Response(await context.db(page), media_type="application/json")


EXPORT_COLUMNS = [
    "call_id",
    "attempt_id",
    "attempt_number",
    "to_phone_number",
    "from_phone_number",
    "call_status",
    "attempt_status",
    "result",
    "dial_error",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "ended_by",
    "end_reason",
    "outcome",
    "outcome_summary",
    "assistant_id",
    "created_at",
    "scheduled_at",
    "recording_url",
    "transcript",
]


def _end_reason(attempt: CallAttemptRecord | None) -> str:
    """As the Call shows it: an earlier version's word in the client's (the column keeps what was written)."""
    return str(in_the_clients_words(attempt.end_reason) or "") if attempt else ""


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def _transcript_text(entries: list[dict[str, Any]] | None) -> str:
    return "\n".join(f"{entry.get('role')}: {entry.get('content', '')}" for entry in entries or [])


def render_csv(
    rows: list[tuple[ExportedCall, list[CallAttemptRecord]]], *, metadata: bool, structured: bool
) -> str:
    """One line per attempt (a call without attempts gets one line), oldest attempt first."""
    metadata_keys = sorted({k for call, _ in rows for k in (call.metadata or {})}) if metadata else []
    output_keys = (
        sorted({k for _, attempts in rows for a in attempts for k in (a.structured_output or {})})
        if structured
        else []
    )
    lines: list[list[Any]] = [
        EXPORT_COLUMNS
        + [f"metadata.{k}" for k in metadata_keys]
        + [f"structured_output.{k}" for k in output_keys]
    ]
    for call, attempts in rows:
        call_metadata = call.metadata or {}
        for attempt in attempts or [None]:
            duration = ""
            if attempt and attempt.answered_at and attempt.ended_at:
                duration = f"{(attempt.ended_at - attempt.answered_at).total_seconds():g}"
            output = (attempt.structured_output if attempt else None) or {}
            lines.append(
                [
                    call.id,
                    attempt.id if attempt else "",
                    attempt.number if attempt else "",
                    call.to_phone_number,
                    call.from_phone_number,
                    call.status,
                    attempt.status if attempt else "",
                    (attempt.result or "") if attempt else "",
                    (attempt.dial_error or "") if attempt else "",
                    _iso(attempt.started_at) if attempt else "",
                    _iso(attempt.answered_at) if attempt else "",
                    _iso(attempt.ended_at) if attempt else "",
                    duration,
                    (attempt.ended_by or "") if attempt else "",
                    _end_reason(attempt),
                    call.outcome or "",
                    call.outcome_summary or "",
                    call.assistant_id or "",
                    _iso(call.created_at),
                    _iso(call.scheduled_at),
                    (attempt.recording_url or "") if attempt else "",
                    _transcript_text(attempt.transcript) if attempt else "",
                ]
                + [call_metadata.get(k, "") for k in metadata_keys]
                + [as_text(output.get(k)) for k in output_keys]
            )
    return csv_text(lines)


@router.post("/call/export", response_model=CallExportResponse, responses=ERRORS, summary="Export calls")
async def export_calls(params: CallExportParams, context: Context, principal: Authenticated) -> Response:
    """Every attempt of the calls matching `filters` (all pages, not just `page`), as CSV text."""

    def export() -> bytes:  # on a thread: 100,000 calls' CSV would hold every other request for seconds
        rows = store.export_calls(context.database, principal.organization_id, params.filters)
        text = render_csv(
            rows, metadata=params.include_metadata, structured=params.include_structured_output_fields
        )
        filename = f"calls-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.csv"
        return JSONResponse(CallExportResponse(csv=text, filename=filename).model_dump()).body

    return Response(await context.db(export), media_type="application/json")


@router.get(
    "/calls/phone-history", response_model=PhoneHistoryResponse, responses=ERRORS, summary="Phone history"
)
async def phone_history(context: Context, principal: Authenticated) -> Response:
    """Per number called: attempts made, whether a human was reached, the last outcome, do-not-contact."""

    def aggregate() -> bytes:  # on a thread: an organization's every number, aggregated
        calls, attempts = store.phone_history_rows(context.database, principal.organization_id)
        history: dict[str, dict[str, Any]] = {}
        # oldest first: the last outcome is the latest
        for number, outcome, campaign_id, campaign_name in calls:
            entry = history.setdefault(
                number,
                {
                    "campaigns": [],
                    "count": 0,
                    "do_not_contact": False,
                    "last_outcome": None,
                    "reached_human": False,
                },
            )
            campaign = {"id": campaign_id, "name": campaign_name}
            if campaign_id and campaign not in entry["campaigns"]:  # each campaign once, first called first
                entry["campaigns"].append(campaign)
            if outcome:
                entry["last_outcome"] = outcome
                entry["do_not_contact"] |= outcome == "do_not_contact"
        last_called: dict[str, datetime] = {}
        for number, result, started_at in attempts:
            entry = history[number]
            entry["count"] += 1
            entry["reached_human"] |= result == "human"
            if started_at and (number not in last_called or started_at > last_called[number]):
                last_called[number] = started_at
        body = {
            number: PhoneHistory(
                **entry,
                hot=entry["last_outcome"] == "interested",
                last_called_at=_iso(last_called.get(number)) or None,
            )
            for number, entry in history.items()
        }
        return JSONResponse(PhoneHistoryResponse(phone_history=body).model_dump(mode="json")).body

    return Response(await context.db(aggregate), media_type="application/json")

"""Campaigns in the database (blocking; the API runs these with `ApiContext.db`, the CLI directly).

Creating a campaign materializes every good row as a call in the `not_launched` status (the official
client's model), with its call id fixed there: that id is the order's workflow id once launched, so a
row can never become two orders. Bad rows are stored too, `skipped` with their reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from activities.campaigns import do_not_contact_numbers, live_campaign
from activities.compliance import is_overridden
from activities.persistence import (
    UnknownCallerId,
    assistant_view,
    call_columns,
    caller_ids,
    find_assistant,
    resolve_caller_id,
    search_text,
)
from api import store
from api.errors import ApiError, not_found, unprocessable, validate_body
from models import Assistant, Call, CallAssistant, CallCampaign, CallRetryConfig, RetryConfigRecord
from models.campaign import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    CampaignCreateParams,
    CampaignLaunchParams,
    CampaignLaunchResponse,
    CampaignUpdateParams,
    LaunchSkipped,
    RowSkip,
    SelectionFilters,
    no_calling_window,
)
from models.common import TERMINAL_STATUSES, canonical_number, check_e164
from models.settings import Settings
from models.tables import (
    AssistantRecord,
    CallOrderRecord,
    CampaignRecord,
    CampaignRowRecord,
    Database,
    lock_campaign,
    utcnow,
)
from workflows.schedule import zones_sharing_no_window

CHUNK = 500


@dataclass(frozen=True)
class Resolved:
    assistant: CallAssistant
    from_phone_number: str
    retry: CallRetryConfig


def resolve(
    database: Database,
    settings: Settings,
    organization_id: str,
    assistant_id: str,
    from_phone_number: str | None,
    retry: CallRetryConfig | None,
    campaign: CampaignRecord | None = None,
    record: AssistantRecord | None = None,
    keep_caller: bool = False,
) -> Resolved:
    """The campaign's assistant (`record` if read already) and caller id, checked as for a single order
    (422 naming the field); an existing `campaign`'s assistant deleted since is the copy its rows keep,
    and, unless the caller id is being changed (`keep_caller`), so is a caller id deleted since."""
    record = record or find_assistant(database, organization_id, assistant_id)
    if record is not None:
        assistant, own_retry = (
            assistant_view(record),
            Assistant.model_validate(record.config).call_retry_config,
        )
    else:
        kept = kept_assistant(database, campaign) if campaign is not None else None
        if kept is None:
            raise unprocessable("assistant_id", f"assistant {assistant_id} not found")
        kept_retry = kept.call_retry_config
        assistant, own_retry = (
            kept,
            CallRetryConfig.model_validate(kept_retry.model_dump()) if kept_retry else None,
        )
    retry = retry or own_retry or CallRetryConfig()
    requested = from_phone_number or assistant.from_phone_number
    owned = caller_ids(database, organization_id)
    if keep_caller and requested is not None and requested not in owned:  # its rows call from it still
        return Resolved(assistant, requested, retry)
    try:
        caller = resolve_caller_id(owned, requested, settings.default_from_phone_number)
    except UnknownCallerId as err:
        raise unprocessable("from_phone_number", str(err)) from None
    return Resolved(assistant, caller.phone_number, retry)


def kept_assistant(database: Database, campaign: CampaignRecord) -> CallAssistant | None:
    """The copy of its assistant a campaign's rows not started yet hold (the latest version they saw),
    else any of its rows (every row launched)."""
    rows = select(CallOrderRecord.call).join(
        CampaignRowRecord, CampaignRowRecord.call_id == CallOrderRecord.id
    )
    with database.session() as session:
        for query in (
            rows.where(*_not_started(campaign)),
            rows.where(CampaignRowRecord.campaign_id == campaign.id),
        ):
            for call in session.scalars(query.limit(20)):
                if assistant := (call or {}).get("assistant"):  # an order's later writes leave it out
                    return CallAssistant.model_validate(assistant)
    return None


def _row_check(
    number: str,
    seen: dict[str, int],
    blocked: set[str],
    metadata: dict[str, str] | None,
    retry: CallRetryConfig,
    now: datetime,
    searched: dict[tuple[str, ...], bool],
) -> RowSkip | None:
    try:
        check_e164(number)
    except ValueError as err:
        return RowSkip(row_index=0, phone_number=number, reason="invalid_phone_number", message=str(err))
    if zones := zones_sharing_no_window(number, retry, now, searched):  # its order would err without calling
        return RowSkip(
            row_index=0, phone_number=number, reason="no_calling_window", message=no_calling_window(zones)
        )
    if number in seen:
        return RowSkip(
            row_index=0,
            phone_number=number,
            reason="duplicate_phone_number",
            message=f"the same number as row {seen[number]}",
        )
    if number in blocked and not is_overridden(metadata):
        return RowSkip(
            row_index=0,
            phone_number=number,
            reason="do_not_contact",
            message="the number asked not to be contacted again",
        )
    return None


def _not_started(campaign: CampaignRecord) -> tuple[Any, ...]:
    """The campaign's rows not started yet: those a PATCH applies to."""
    states = CampaignRowRecord.state.in_(("not_launched", "pending"))  # type: ignore[attr-defined]
    return (CampaignRowRecord.campaign_id == campaign.id, states)


def _refuse_rows_without_window(database: Database, campaign: CampaignRecord, retry: CallRetryConfig) -> None:
    """A new call_retry_config leaves every row not started yet a calling window, or is a 422: at
    creation such a row is skipped, and launched it would only err."""
    searched: dict[tuple[str, ...], bool] = {}
    now = utcnow()
    with database.session() as session:
        numbers = session.scalars(
            select(CampaignRowRecord.phone_number).where(*_not_started(campaign)).distinct()
        )
        for number in numbers:
            if zones := zones_sharing_no_window(number, retry, now, searched):
                raise unprocessable("call_retry_config", f"the row of {number} {no_calling_window(zones)}")


def placeholder_call(
    call_id: str, campaign: CampaignRecord, resolved: Resolved, row: dict[str, Any], now: datetime
) -> Call:
    """The row's call before its launch (status `not_launched`): what the rows and call search show."""
    return Call(
        id=call_id,
        assistant=resolved.assistant,
        call_retry_config=RetryConfigRecord.model_validate(resolved.retry.model_dump()),
        campaign=CallCampaign(id=campaign.id, name=campaign.name),
        created_at=now,
        first_sentence_delay_ms=resolved.assistant.first_sentence_delay_ms,
        from_phone_number=resolved.from_phone_number,
        llm_model=resolved.assistant.llm_model,
        metadata=row["row_metadata"],
        organization_id=campaign.organization_id,
        prompt_variables=row["input_data"] or None,
        scheduled_at=now,
        status="not_launched",
        to_phone_number=row["phone_number"],
        updated_at=now,
    )


def create_campaign(
    database: Database, settings: Settings, organization_id: str, params: CampaignCreateParams
) -> tuple[CampaignRecord, list[RowSkip]]:
    resolved = resolve(
        database,
        settings,
        organization_id,
        params.assistant_id,
        params.from_phone_number,
        params.call_retry_config,
    )
    now = utcnow()
    campaign = CampaignRecord(
        id=str(uuid.uuid4()),
        organization_id=organization_id,
        name=params.name,
        assistant_id=resolved.assistant.id,  # as stored: an id given in capitals found it too
        from_phone_number=params.from_phone_number,
        call_retry_config=params.call_retry_config.model_dump(mode="json")
        if params.call_retry_config
        else None,
        max_concurrent_calls=params.max_concurrent_calls or DEFAULT_MAX_CONCURRENT_CALLS,
        metadata_keys=sorted({key for contact in params.contacts for key in contact.prompt_variables}),
        row_count=len(params.contacts),
        created_at=now,
        updated_at=now,
    )
    numbers = [canonical_number(contact.to_phone_number) for contact in params.contacts]
    with database.session() as session:
        blocked: set[str] = set()
        for start in range(0, len(numbers), CHUNK):
            blocked |= do_not_contact_numbers(session, organization_id, numbers[start : start + CHUNK])
        rows: list[dict[str, Any]] = []
        searched: dict[tuple[str, ...], bool] = {}  # zone sets found to share no window, or to share one
        calls: list[dict[str, Any]] = []
        skips: list[RowSkip] = []
        seen: dict[str, int] = {}
        for index, (contact, number) in enumerate(zip(params.contacts, numbers, strict=True)):
            row: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "campaign_id": campaign.id,
                "organization_id": organization_id,
                "row_index": index,
                "phone_number": number,
                "input_data": contact.prompt_variables,
                "row_metadata": contact.metadata,
                "state": "not_launched",
                "skip_reason": None,
                "skip_message": None,
                "call_id": None,
                "scheduled_at": None,
            }
            skip = _row_check(number, seen, blocked, contact.metadata, resolved.retry, now, searched)
            if skip is not None:
                skip = skip.model_copy(update={"row_index": index})
                skips.append(skip)
                row.update(state="skipped", skip_reason=skip.reason, skip_message=skip.message)
            else:
                seen[number] = index
                row["call_id"] = str(uuid.uuid4())
                call = placeholder_call(row["call_id"], campaign, resolved, row, now)
                calls.append({"id": call.id, **call_columns(call, 0)})
            rows.append(row)
        session.add(campaign)
        session.flush()
        for start in range(0, len(rows), CHUNK):
            session.execute(insert(CampaignRowRecord), rows[start : start + CHUNK])
        for start in range(0, len(calls), CHUNK):
            session.execute(insert(CallOrderRecord), calls[start : start + CHUNK])
        session.commit()
    return campaign, skips


def get_campaign(database: Database, organization_id: str, campaign_id: str) -> CampaignRecord:
    with database.session() as session:
        record = live_campaign(session, organization_id, campaign_id)
    if record is None:
        raise not_found("campaign", campaign_id)
    return record


def list_campaigns(database: Database, organization_id: str) -> list[CampaignRecord]:
    with database.session() as session:
        query = (
            select(CampaignRecord)
            .where(CampaignRecord.organization_id == organization_id, CampaignRecord.deleted_at.is_(None))  # type: ignore[union-attr]
            .order_by(CampaignRecord.created_at, CampaignRecord.id)  # type: ignore[arg-type]
        )
        return list(session.scalars(query))


def update_campaign(
    database: Database, settings: Settings, organization_id: str, campaign_id: str, changes: dict[str, Any]
) -> CampaignRecord:
    """Partial update, validated as a whole (null clears; a null max falls back to the default)."""

    def write(record: CampaignRecord) -> CampaignRecord | None:
        nonlocal resolved
        current = {
            "name": record.name,
            "call_retry_config": record.call_retry_config,
            "from_phone_number": record.from_phone_number,
            "max_concurrent_calls": record.max_concurrent_calls,
        }
        merged = validate_body(CampaignUpdateParams, {**current, **changes})
        retry = merged.call_retry_config
        if {"call_retry_config", "from_phone_number"} & set(changes):  # a rename needs neither resolved
            resolved = resolve(
                database,
                settings,
                organization_id,
                record.assistant_id,
                merged.from_phone_number,
                retry,
                record,
                keep_caller="from_phone_number" not in changes,
            )
            if "call_retry_config" in changes:
                _refuse_rows_without_window(database, record, resolved.retry)
        values = {
            "name": merged.name or record.name,
            "call_retry_config": retry.model_dump(mode="json") if retry else None,
            "from_phone_number": merged.from_phone_number,
            "max_concurrent_calls": merged.max_concurrent_calls or DEFAULT_MAX_CONCURRENT_CALLS,
        }
        return store.update_if_unchanged(database, record, values)

    resolved: Resolved | None = None  # by the write that landed, when the retry config or caller id changed
    updated = store.updating(lambda: get_campaign(database, organization_id, campaign_id), write, "campaign")
    _refresh_placeholders(database, updated.id, set(changes), lambda _: resolved)
    return updated


def _refresh_placeholders(
    database: Database,
    campaign_id: str,
    changed: set[str],
    resolving: Callable[[CampaignRecord], Resolved | None],
) -> None:
    """The calls of the rows not started yet show what they will run with: the campaign's new name,
    retry config or caller id, or its assistant's new version (placeholders only: an order started
    writes its own). A row's order whose assistant is deleted runs with the copy its call shows.

    Under the campaign's lock (`lock_campaign`), the campaign and what `resolving` makes of it read
    then: a PATCH, an assistant's PATCH or a cancel writing these rows meanwhile is never undone by a
    merge into what was read before it (a review lost updates so, and showed a deleted assistant's rows
    an older version). As JSON, in one transaction: a whole Call revalidated took 0.7 ms a row."""
    with database.session() as session:
        lock_campaign(session, campaign_id)
        campaign = session.get(CampaignRecord, campaign_id)
        resolved = resolving(campaign) if campaign is not None else None
        if campaign is None:
            return
        shown: dict[str, Any] = {}
        if "name" in changed:
            shown["campaign"] = CallCampaign(id=campaign.id, name=campaign.name)
        if resolved is not None and "assistant" in changed:
            assistant = resolved.assistant
            shown |= {
                "assistant": assistant,
                "first_sentence_delay_ms": assistant.first_sentence_delay_ms,
                "llm_model": assistant.llm_model,
            }
        if resolved is not None and "call_retry_config" in changed:
            shown["call_retry_config"] = RetryConfigRecord.model_validate(resolved.retry.model_dump())
        if resolved is not None and "from_phone_number" in changed:
            shown["from_phone_number"] = resolved.from_phone_number
        if not shown:
            return
        shown_json = {
            name: value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            for name, value in shown.items()
        }
        placeholders = session.execute(
            select(CallOrderRecord.id, CallOrderRecord.call)
            .join(CampaignRowRecord, CampaignRowRecord.call_id == CallOrderRecord.id)
            .where(*_not_started(campaign), CallOrderRecord.seq == 0)
        ).all()
        for call_id, stored in placeholders:  # unless its order has written it meanwhile (seq > 0): launched
            call = {**stored, **shown_json}
            session.execute(
                update(CallOrderRecord)
                .where(CallOrderRecord.id == call_id, CallOrderRecord.seq == 0)  # type: ignore[arg-type]
                .values(
                    call=call,
                    from_phone_number=call["from_phone_number"],
                    assistant_id=(call.get("assistant") or {}).get("id"),
                    search_text=search_text(call),
                )
            )
        session.commit()


def refresh_rows_of(database: Database, settings: Settings, organization_id: str, assistant_id: str) -> None:
    """After its assistant changed: the rows not started yet of every campaign it runs show (and keep,
    should it be deleted) its version then, and the retry config and caller id that come with it."""
    with database.session() as session:
        campaigns = list(
            session.scalars(
                select(CampaignRecord.id).where(
                    CampaignRecord.organization_id == organization_id,
                    # campaigns created before ids were stored as the assistant's own took it in any case
                    func.lower(CampaignRecord.assistant_id) == assistant_id.lower(),
                    CampaignRecord.deleted_at.is_(None),  # type: ignore[union-attr]
                )
            )
        )

    def resolving(campaign: CampaignRecord) -> Resolved | None:
        """As stored now, under the campaign's lock: a later PATCH's version, never an older one; none
        once deleted (its rows keep the copy they show) or its caller id deleted (PATCH it to change)."""
        assistant = find_assistant(database, organization_id, assistant_id)
        if assistant is None or campaign.deleted_at is not None:
            return None
        own = (
            CallRetryConfig.model_validate(campaign.call_retry_config) if campaign.call_retry_config else None
        )
        try:
            return resolve(
                database,
                settings,
                organization_id,
                assistant_id,
                campaign.from_phone_number,
                own,
                record=assistant,
            )
        except ApiError:
            return None

    for campaign_id in campaigns:
        _refresh_placeholders(
            database, campaign_id, {"assistant", "call_retry_config", "from_phone_number"}, resolving
        )


def set_flags(
    database: Database, record: CampaignRecord, *, paused: bool | None = None, cancelled: bool | None = None
) -> CampaignRecord:
    """Store the flags; a pause or a resume is numbered (`steered`) in the order the writes land, and
    its signal carries that number, so the workflow ends in the state stored last whatever order the
    signals of concurrent steerings arrive in."""
    values: dict[str, Any] = {"updated_at": utcnow()}
    if paused is not None:
        values |= {"paused": paused, "steered": CampaignRecord.steered + 1}
    if cancelled is not None:
        values["is_cancelled"] = cancelled
    with database.session() as session:
        session.execute(update(CampaignRecord).where(CampaignRecord.id == record.id).values(**values))  # type: ignore[arg-type]
        stored = session.get(CampaignRecord, record.id, populate_existing=True)  # its own number
        assert stored is not None
        session.commit()
        return stored


def unsteer(database: Database, record: CampaignRecord, *, paused: bool) -> None:
    """Put back the flag a pause or a resume had stored (`record`, as it stored it) whose signal could
    not be sent, unless another steering was stored since."""
    with database.session() as session:
        session.execute(
            update(CampaignRecord)
            .where(CampaignRecord.id == record.id, CampaignRecord.steered == record.steered)  # type: ignore[arg-type]
            .values(paused=paused, updated_at=utcnow())
        )
        session.commit()


def delete_campaign(database: Database, record: CampaignRecord) -> None:
    """Hidden from then on; its calls never started go away (rows never launched, and rows launched
    but not started yet, or cancelled so: their calls are placeholders), the others stay in the call
    history. An order that starts meanwhile writes its own row back at its first step."""
    with database.session() as session:
        stored = session.get(CampaignRecord, record.id)
        assert stored is not None
        stored.deleted_at = stored.updated_at = utcnow()
        never = select(CampaignRowRecord.call_id).where(
            CampaignRowRecord.campaign_id == record.id,
            CampaignRowRecord.state.in_(("not_launched", "pending", "cancelled")),  # type: ignore[attr-defined]
        )
        session.execute(
            delete(CallOrderRecord).where(CallOrderRecord.id.in_(never), CallOrderRecord.seq == 0)  # type: ignore[union-attr]
        )
        session.commit()


# --- rows and their calls ----------------------------------------------------------------------------


def rows_with_calls(
    database: Database, campaign_id: str, *, offset: int = 0, limit: int | None = None
) -> list[tuple[CampaignRowRecord, CallOrderRecord | None]]:
    with database.session() as session:
        query = (
            select(CampaignRowRecord, CallOrderRecord)
            .outerjoin(CallOrderRecord, CallOrderRecord.id == CampaignRowRecord.call_id)
            .where(CampaignRowRecord.campaign_id == campaign_id)
            .order_by(CampaignRowRecord.row_index)  # type: ignore[arg-type]
            .offset(offset)
            .limit(limit)
        )
        return [(row, call) for row, call in session.execute(query)]


def _matches(filters: SelectionFilters, row: CampaignRowRecord, call: CallOrderRecord) -> bool:
    def among(values: list[str], value: str | None) -> bool:
        return not values or (value or "none") in values

    if filters.assignee_ids:
        return False  # outdial has no assignees
    if filters.directions and call.direction not in filters.directions:
        return False
    if not (
        among(list(filters.outcomes), call.outcome)
        and among(list(filters.results), call.last_result)
        and among(list(filters.statuses), call.status)
    ):
        return False
    if filters.query:
        needle = filters.query.lower()
        haystack = " ".join([row.phone_number, call.id, *map(str, (row.input_data or {}).values())]).lower()
        return needle in haystack
    return True


def select_for_launch(
    database: Database, organization_id: str, campaign_id: str, params: CampaignLaunchParams
) -> CampaignLaunchResponse:
    """Mark the selected rows `pending` (the campaign workflow starts them); a row is launched once:
    one already on its way is `active`, one whose order ended is `attempts_exhausted` or `cancelled`."""
    if params.mode != "ai_first":
        raise unprocessable(
            "mode", "only ai_first is supported (outdial has no operator speed-dial sessions)"
        )
    campaign = get_campaign(database, organization_id, campaign_id)
    if campaign.is_cancelled:
        raise ApiError(409, "conflict", f"campaign {campaign_id} is cancelled; it can no longer be launched")
    chosen = set(params.selection.rows.call_ids)
    only = params.selection.rows.mode == "only"
    response = CampaignLaunchResponse(launched=0, skipped=LaunchSkipped())
    launch: list[str] = []
    for row, call in rows_with_calls(database, campaign.id):
        if call is None or (call.id in chosen) != only or not _matches(params.selection.filters, row, call):
            continue
        if row.state == "not_launched":
            launch.append(row.id)
        elif row.state == "cancelled" or call.status == "cancelled":
            response.skipped.cancelled += 1
        elif call.status in TERMINAL_STATUSES:
            response.skipped.attempts_exhausted += 1
        else:
            response.skipped.active += 1
    with database.session() as session:
        for start in range(0, len(launch), CHUNK):
            chunk = launch[start : start + CHUNK]
            marked = session.execute(
                update(CampaignRowRecord)
                .where(
                    CampaignRowRecord.id.in_(chunk),  # type: ignore[union-attr]
                    CampaignRowRecord.state == "not_launched",  # a concurrent launch took it: not twice
                )
                .values(state="pending", scheduled_at=params.scheduled_at)
            )
            response.launched += marked.rowcount  # type: ignore[attr-defined]
            response.skipped.active += len(chunk) - marked.rowcount  # type: ignore[attr-defined]
        stored = session.get(CampaignRecord, campaign.id)
        assert stored is not None
        stored.launched_at = stored.launched_at or utcnow()
        stored.scheduled_at = params.scheduled_at or stored.scheduled_at
        stored.updated_at = utcnow()
        session.commit()
    return response

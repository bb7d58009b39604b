"""The campaign workflow's activities: start a batch of its rows' orders, steer its orders.

Rows live in the database, never in the workflow's history: a 10,000-row list would otherwise sit in
every run's input and in one child-start event per row. `campaign_launch_rows` reads the next pending
rows with the campaign's current settings (so a PATCH applies to the rows not started yet), starts
each row's CallOrderWorkflow through the client, then marks the row `launched`. The order's id
`call-<call id>` comes from the row and is started with REJECT_DUPLICATE, so a retried activity (or a
second launch) finds it taken instead of starting it twice.

Why the client and not child workflows: the orders must outlive the campaign workflow anyway (an
ABANDONed child is just that), a batch costs the campaign 3 history events instead of 2-3 per row,
and the time-skipping test server stops skipping time for good once a parent run with running
abandoned children has closed (every continue-as-new does), which would make the campaign untestable.

`campaign_steer_orders` fans a signal out to the campaign's orders the same way: one activity
instead of two history events per order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import false, func, or_, select, update
from sqlmodel import Session
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.compliance import is_overridden
from activities.persistence import call_columns
from activities.start_refusals import too_large
from models import Assistant, Call, CallCreateParams, CallRetryConfig
from models.call import carried_too_much, order_workflow_id
from models.campaign import (
    InFlightRequest,
    LaunchRowsRequest,
    LaunchRowsResult,
    RowSkip,
    SteerRequest,
    SteerResult,
    concurrency_key,
    no_calling_window,
)
from models.common import TERMINAL_STATUSES
from models.settings import Settings
from models.tables import (
    AssistantRecord,
    CallOrderRecord,
    CampaignRecord,
    CampaignRowRecord,
    Database,
    DoNotContactRecord,
    lock_campaign,
    utcnow,
)
from workflows.schedule import zones_sharing_no_window

SIGNAL_PARALLELISM = 16
IN_CALL = frozenset({"calling", "post_processing"})


def live_campaign(session: Session, organization_id: str, campaign_id: str) -> CampaignRecord | None:
    record = session.get(CampaignRecord, campaign_id)
    if record is None or record.organization_id != organization_id or record.deleted_at is not None:
        return None
    return record


def order_params(campaign: CampaignRecord, row: CampaignRowRecord) -> CallCreateParams:
    """The row's call order: the campaign's assistant and caller id, the row's number and variables,
    and the campaign's concurrency key (every order of a campaign shares it)."""
    return CallCreateParams.model_validate(
        {
            "phone_number": row.phone_number,
            "assistant_id": campaign.assistant_id,
            "from_phone_number": campaign.from_phone_number,
            "concurrency": {"key": concurrency_key(campaign.id), "max": campaign.max_concurrent_calls},
            "metadata": row.row_metadata or None,
            "prompt_variables": row.input_data or None,
            "scheduled_at": row.scheduled_at,
        }
    )


def skip_row(session: Session, row: CampaignRowRecord, reason: str, message: str) -> RowSkip:
    """A bad row is reported on itself and never called; its not-launched call goes away."""
    if row.call_id:
        placeholder = session.get(CallOrderRecord, row.call_id)
        if placeholder is not None and placeholder.seq == 0:
            session.delete(placeholder)
    row.state, row.skip_reason, row.skip_message, row.call_id = "skipped", reason, message, None
    session.add(row)
    return RowSkip(row_index=row.row_index, phone_number=row.phone_number, reason=reason, message=message)  # type: ignore[arg-type]


def do_not_contact_numbers(session: Session, organization_id: str, numbers: list[str]) -> set[str]:
    if not numbers:
        return set()
    query = select(DoNotContactRecord.phone_number).where(
        DoNotContactRecord.organization_id == organization_id,
        DoNotContactRecord.phone_number.in_(numbers),  # type: ignore[attr-defined]
    )
    return set(session.scalars(query))


def pending_rows(
    database: Database, request: LaunchRowsRequest
) -> tuple[CampaignRecord | None, list[Any], bool]:
    """(the campaign, [(row, its order's params or its RowSkip)], whether pending rows remain after
    them) for the next pending rows; rows found do-not-contact (or whose order no longer validates)
    are skipped and reported here."""
    with database.session() as session:
        campaign = live_campaign(session, request.organization_id, request.campaign_id)
        if campaign is None:
            return None, [], False
        rows = list(
            session.scalars(
                select(CampaignRowRecord)
                .where(
                    CampaignRowRecord.campaign_id == campaign.id,
                    CampaignRowRecord.state == "pending",
                    CampaignRowRecord.row_index > request.after_row_index,
                )
                .order_by(CampaignRowRecord.row_index)  # type: ignore[arg-type]
                .limit(request.limit + 1)  # one more: does any row remain after this batch?
            )
        )
        rows_left = len(rows) > request.limit
        rows = rows[: request.limit]
        blocked = do_not_contact_numbers(session, campaign.organization_id, [r.phone_number for r in rows])
        retry, now, searched = _rows_retry(session, campaign), utcnow(), {}
        batch: list[Any] = []
        for row in rows:
            if row.phone_number in blocked and not is_overridden(row.row_metadata):
                skip = skip_row(session, row, "do_not_contact", "the number asked not to be contacted again")
                batch.append((row, skip))
                continue
            # its assistant's windows changed since the row was checked: its order would err, never call
            if retry and (zones := zones_sharing_no_window(row.phone_number, retry, now, searched)):
                batch.append((row, skip_row(session, row, "no_calling_window", no_calling_window(zones))))
                continue
            try:
                batch.append((row, order_params(campaign, row)))
            except ValidationError as err:  # e.g. a caller id the organization no longer owns
                batch.append((row, skip_row(session, row, "invalid_phone_number", str(err)[:500])))
        session.commit()
        return campaign, batch, rows_left


def _rows_retry(session: Session, campaign: CampaignRecord) -> CallRetryConfig | None:
    """The retry config the campaign's orders get: its own, else its assistant's (None once deleted:
    its rows run with the copy they were checked with)."""
    if campaign.call_retry_config:
        return CallRetryConfig.model_validate(campaign.call_retry_config)
    assistant = session.get(AssistantRecord, campaign.assistant_id.lower())  # stored in any case before
    if assistant is None:
        return None
    return Assistant.model_validate(assistant.config).call_retry_config or CallRetryConfig()


def skip_refused(database: Database, refused: dict[str, str]) -> list[RowSkip]:
    """Rows whose order Temporal refused for good, skipped with its reason (the rest of the batch ran)."""
    with database.session() as session:
        skips = [
            skip_row(session, row, "order_refused", message)
            for row_id, message in refused.items()
            if (row := session.get(CampaignRowRecord, row_id)) is not None
        ]
        session.commit()
        return skips


def mark_launched(database: Database, row_ids: list[str]) -> None:
    with database.session() as session:
        session.execute(
            update(CampaignRowRecord)
            .where(CampaignRowRecord.id.in_(row_ids), CampaignRowRecord.state == "pending")  # type: ignore[union-attr]
            .values(state="launched")
        )
        session.commit()


def order_memo(campaign: CampaignRecord) -> dict[str, Any]:
    """What the order reads from its memo: organization, campaign, the campaign's retry config, and
    when its call was created (with the campaign: its row's call says so from then, and keeps it)."""
    memo: dict[str, Any] = {
        "organization_id": campaign.organization_id,
        "campaign": {"id": campaign.id, "name": campaign.name},
        "created_at": campaign.created_at,
    }
    if campaign.call_retry_config:
        memo["call_retry_config"] = campaign.call_retry_config
    return memo


def steer_targets(database: Database, request: SteerRequest) -> list[tuple[str, str]]:
    """(call id, last known status) of the campaign's started orders that have not ended. For
    `cancel`, rows selected but never started are cancelled here, with their not-launched calls."""
    with database.session() as session:
        if request.action == "cancel":
            lock_campaign(session, request.campaign_id)  # a PATCH refreshing its rows meanwhile waits
            _cancel_pending(session, request.campaign_id)
            # recorded by the API before its signal; not by Temporal's own cancellation of the workflow
            session.execute(
                update(CampaignRecord)
                .where(CampaignRecord.id == request.campaign_id, CampaignRecord.is_cancelled == false())
                .values(is_cancelled=True, updated_at=utcnow())
            )
        query = (
            select(CampaignRowRecord.call_id, CallOrderRecord.status)
            # An order whose row is missing is steered too: started as a delete removed its placeholder,
            # it has not written its own yet.
            .outerjoin(CallOrderRecord, CallOrderRecord.id == CampaignRowRecord.call_id)
            .where(
                CampaignRowRecord.campaign_id == request.campaign_id,
                CampaignRowRecord.organization_id == request.organization_id,
                CampaignRowRecord.state == "launched",
                or_(
                    CallOrderRecord.status.is_(None),  # type: ignore[union-attr]
                    CallOrderRecord.status.not_in(TERMINAL_STATUSES),  # type: ignore[attr-defined]
                ),
            )
            .order_by(CampaignRowRecord.row_index)  # type: ignore[arg-type]
        )
        targets = [(str(call_id), str(status or "")) for call_id, status in session.execute(query)]
        session.commit()
        return targets


def _cancel_pending(session: Session, campaign_id: str) -> None:
    rows = session.scalars(
        select(CampaignRowRecord).where(
            CampaignRowRecord.campaign_id == campaign_id, CampaignRowRecord.state == "pending"
        )
    )
    for row in rows:
        row.state = "cancelled"
        placeholder = session.get(CallOrderRecord, row.call_id) if row.call_id else None
        if placeholder is not None and placeholder.seq == 0:
            call = Call.model_validate(placeholder.call).model_copy(update={"status": "cancelled"})
            values: dict[str, Any] = call_columns(call.with_derived_fields(), 0)
            for name, value in values.items():
                setattr(placeholder, name, value)
            session.add(placeholder)
        session.add(row)


def orders_in_flight(database: Database, campaign_id: str, organization_id: str) -> int:
    """How many of the campaign's started orders have not ended (as last persisted)."""
    with database.session() as session:
        query = (
            select(func.count())
            .select_from(CampaignRowRecord)
            .join(CallOrderRecord, CallOrderRecord.id == CampaignRowRecord.call_id)
            .where(
                CampaignRowRecord.campaign_id == campaign_id,
                CampaignRowRecord.organization_id == organization_id,
                CampaignRowRecord.state == "launched",
                CallOrderRecord.status.not_in(TERMINAL_STATUSES),  # type: ignore[attr-defined]
            )
        )
        return int(session.scalar(query) or 0)


class CampaignActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client

    @property
    def database(self) -> Database:
        return Database.for_url(self.settings.database_url)

    def all(self) -> list[Callable]:
        return [self.campaign_launch_rows, self.campaign_steer_orders, self.campaign_orders_in_flight]

    @activity.defn(name="campaign_launch_rows")
    async def campaign_launch_rows(self, request: LaunchRowsRequest) -> LaunchRowsResult:
        """Start the next pending rows' orders, then mark them launched (idempotent, see module)."""
        activity.heartbeat()
        campaign, batch, rows_left = await asyncio.to_thread(pending_rows, self.database, request)
        if campaign is None:
            return LaunchRowsResult(found=False)
        result = LaunchRowsResult(
            cursor=max((row.row_index for row, _ in batch), default=None), rows_left=rows_left
        )
        memo = order_memo(campaign)
        limit = asyncio.Semaphore(SIGNAL_PARALLELISM)
        refused: dict[str, str] = {}  # row id -> why Temporal refused its order for good

        async def start(row: CampaignRowRecord, params: CallCreateParams) -> None:
            if why := carried_too_much(params):  # Temporal would take it, and its order stall after the call
                refused[row.id] = f"its order is too large: {why}"
                return
            async with limit:
                try:
                    await self.client.start_workflow(
                        "CallOrderWorkflow",
                        params,
                        id=order_workflow_id(row.call_id),
                        task_queue=request.task_queue,
                        memo=memo,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        static_summary=f"campaign {campaign.name}: row {row.row_index}",
                    )
                    result.started += 1
                except WorkflowAlreadyStartedError:
                    result.already_started += 1
                except RPCError as err:  # too large: that row is skipped, not the batch retried for ever
                    if not too_large(err):  # any other refusal is the batch's (a configuration mistake
                        raise  # must not skip every row of a campaign)
                    refused[row.id] = f"Temporal refused its order: {err.message}"[:500]
            activity.heartbeat(result.started + result.already_started)

        orders = [(row, item) for row, item in batch if isinstance(item, CallCreateParams)]
        await asyncio.gather(*(start(row, params) for row, params in orders))
        result.skipped = [item for _, item in batch if isinstance(item, RowSkip)]
        if refused:
            result.skipped += await asyncio.to_thread(skip_refused, self.database, refused)
        if launched := [row.id for row, _ in orders if row.id not in refused]:
            await asyncio.to_thread(mark_launched, self.database, launched)
        result.in_flight = await asyncio.to_thread(
            orders_in_flight, self.database, request.campaign_id, request.organization_id
        )
        return result

    @activity.defn(name="campaign_orders_in_flight")
    async def campaign_orders_in_flight(self, request: InFlightRequest) -> int:
        """How many of the campaign's orders run (started, not ended): read-only."""
        return await asyncio.to_thread(
            orders_in_flight, self.database, request.campaign_id, request.organization_id
        )

    @activity.defn(name="campaign_steer_orders")
    async def campaign_steer_orders(self, request: SteerRequest) -> SteerResult:
        """Pause or resume every started order that has not ended; for cancel, cancel those waiting
        and pause those in a call (they stop after it; the workflow asks again until none is left).
        Idempotent: the orders' signals are, and an order that ended meanwhile is skipped."""
        targets = await asyncio.to_thread(steer_targets, self.database, request)
        limit = asyncio.Semaphore(SIGNAL_PARALLELISM)
        result = SteerResult()

        async def one(call_id: str, status: str) -> None:
            in_call = request.action == "cancel" and status in IN_CALL
            signal = "pause" if in_call else request.action
            async with limit:
                try:
                    await self.client.get_workflow_handle(order_workflow_id(call_id)).signal(signal)
                except RPCError as err:
                    # not found: it ended meanwhile, or was terminated (its row keeps its last status,
                    # so counting it in a call would have the campaign wait for it forever)
                    if err.status != RPCStatusCode.NOT_FOUND:
                        raise
                    return
            result.in_call += in_call
            result.signalled += 1
            if result.signalled % 100 == 0:
                activity.heartbeat(result.signalled)

        await asyncio.gather(*(one(call_id, status) for call_id, status in targets))
        return result

"""The call order's activities: thin and idempotent; the providers do the work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import OperationalError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.analysis import failure_holding
from activities.heartbeats import heartbeating
from activities.persistence import (
    CallerId,
    UnknownCallerId,
    accepted_call,
    assistant_view,
    caller_ids,
    deleted_trunk,
    find_assistant,
    resolve_caller_id,
    trunk_of,
)
from activities.providers import Analyzer, Telephony, refuse_to_ring_late
from models import Call
from models.assistant import DEFAULT_ASSISTANT_PROMPT, Assistant, call_assistant_from
from models.retry import CallRetryConfig
from models.settings import Settings
from models.tables import Database
from models.workflow_io import (
    AnalysisResult,
    AnalyzeRequest,
    ConverseRequest,
    ConverseResult,
    DialRequest,
    DialResult,
    HangUpRequest,
    PreparedOrder,
    PrepareRequest,
)
from workflows.schedule import resolve_timezones

log = logging.getLogger(__name__)
# How long a dial waits for the database to say its trunk: well within its heartbeat timeout (10 s).
TRUNK_READ_SECONDS = 3.0

INVALID_ORDER = "InvalidCallOrder"


class CallActivities:
    def __init__(self, settings: Settings, telephony: Telephony, analyzer: Analyzer) -> None:
        self.settings = settings
        self.telephony = telephony
        self.analyzer = analyzer

    @activity.defn(name="prepare_order")
    async def prepare_order(self, request: PrepareRequest) -> PreparedOrder:
        """Resolve the assistant, the caller id and the recipient's timezones (status `initializing`).

        A stored assistant and the caller id come from the organization's records (the database), so
        an id or number of another organization is as unknown as a made-up one."""
        return await asyncio.to_thread(self._prepare, request)

    def _prepare(self, request: PrepareRequest) -> PreparedOrder:
        database = Database.for_url(self.settings.database_url)
        accepted: list[Call | None] = []  # read once, when something the order names may be gone

        def as_accepted() -> Call | None:
            if not accepted:
                accepted.append(
                    accepted_call(database, request.organization_id, request.call_id, request.accepted)
                )
            return accepted[0]

        if request.assistant_id is not None:
            record = find_assistant(database, request.organization_id, request.assistant_id)
            if record is not None:
                inline = Assistant.model_validate(record.config)
                assistant = assistant_view(record)
                from_number, retry_config = inline.from_phone_number, inline.call_retry_config
            else:  # deleted since the order was accepted: it keeps the assistant it was accepted with
                call = as_accepted()
                if call is None or call.assistant is None or call.assistant.id != request.assistant_id:
                    raise ApplicationError(
                        f"assistant_id: assistant {request.assistant_id} not found",
                        type=INVALID_ORDER,
                        non_retryable=True,
                    )
                assistant = call.assistant
                from_number = assistant.from_phone_number
                kept = assistant.call_retry_config
                retry_config = CallRetryConfig.model_validate(kept.model_dump()) if kept else None
        else:
            inline = request.assistant or Assistant(prompt=DEFAULT_ASSISTANT_PROMPT)
            assistant = call_assistant_from(
                inline,
                id=f"inline-{request.call_id}",
                organization_id=request.organization_id,
                now=request.created_at or datetime.now(UTC),
            )
            from_number, retry_config = inline.from_phone_number, inline.call_retry_config
        caller = self._caller(
            database, request.organization_id, request.from_phone_number or from_number, as_accepted
        )
        retry = (request.call_retry_config or retry_config or CallRetryConfig()).applied()
        return PreparedOrder(
            assistant=assistant,
            from_phone_number=caller.phone_number,
            livekit_outbound_trunk_id=caller.livekit_outbound_trunk_id,
            zones=resolve_timezones(request.to_phone_number, retry.timezone),
            retry=retry,
        )

    def _caller(
        self,
        database: Database,
        organization_id: str,
        requested: str | None,
        as_accepted: Callable[[], Call | None],
    ) -> CallerId:
        """The number the order calls from: the one it was accepted with if the organization has
        deleted it since (asked for, or its default then), else as `resolve_caller_id` resolves it."""
        owned = caller_ids(database, organization_id)
        if requested is None or requested not in owned:
            call = as_accepted()
            kept = call.from_phone_number if call is not None else None
            if call is not None and kept and kept not in owned and requested in (None, kept):
                accepted_at = call.created_at if isinstance(call.created_at, datetime) else None
                trunk = deleted_trunk(database, organization_id, kept, accepted_at) if accepted_at else None
                return CallerId(kept, trunk)  # the trunk it had when deleted, if after the order came
        try:
            return resolve_caller_id(owned, requested, self.settings.default_from_phone_number)
        except UnknownCallerId as err:
            raise ApplicationError(
                f"from_phone_number: {err}", type=INVALID_ORDER, non_retryable=True
            ) from None

    @activity.defn(name="dial")
    async def dial(self, request: DialRequest) -> DialResult:
        if activity.in_activity() and activity.info().attempt == 1:
            refuse_to_ring_late(request)  # nothing can have rung yet (a retry's provider asks it)
        if request.livekit_outbound_trunk_id is None and request.organization_id is not None:
            request = request.model_copy(update={"livekit_outbound_trunk_id": await self._trunk(request)})
        return await heartbeating(self.telephony.dial(request))

    async def _trunk(self, request: DialRequest) -> str | None:
        """The from number's own trunk, as its owner set it now; the one the order was accepted with if
        the database cannot say within TRUNK_READ_SECONDS (down, or locked): a dial has three tries, and
        one failed on the read alone was an attempt lost, and the order ended, without a ring."""
        assert request.organization_id is not None
        try:
            async with asyncio.timeout(TRUNK_READ_SECONDS):
                return await asyncio.to_thread(
                    trunk_of,
                    Database.for_url(self.settings.database_url),
                    request.organization_id,
                    request.from_phone_number,
                    request.accepted_trunk_id,
                )
        except (TimeoutError, OperationalError) as err:
            reason = "no answer in time" if isinstance(err, TimeoutError) else type(err).__name__
            log.warning(
                "call %s: the database could not say the trunk of %s (%s): dialling through the one it was "
                "accepted with",
                request.call_id,
                request.from_phone_number,
                reason,
            )
            return request.accepted_trunk_id

    @activity.defn(name="converse")
    async def converse(self, request: ConverseRequest) -> ConverseResult:
        return await self.telephony.converse(request)

    @activity.defn(name="hang_up")
    async def hang_up(self, request: HangUpRequest) -> None:
        """A cancelled step that ended without hanging up (its worker or voice agent gone)."""
        await self.telephony.end_call(request)

    @activity.defn(name="analyze")
    async def analyze(self, request: AnalyzeRequest) -> AnalysisResult:
        """The analyzer's outcome. A real model reading a simulated call's script would sound like a real
        call (and its webhook, email or SMS announce a lead never called): its summary says so."""
        if self.telephony.name != "simulated" or self.analyzer.name == "simulated":
            return await self.analyzer.analyze(request)
        try:
            return _said_simulated(await self.analyzer.analyze(request))
        except ApplicationError as err:  # a failure holding what was answered: it says so too
            if not err.details:
                raise
            raise failure_holding(
                err, _said_simulated(AnalysisResult.model_validate(err.details[0]))
            ) from None


def _said_simulated(result: AnalysisResult) -> AnalysisResult:
    summary = f"[simulated call] {result.outcome_summary or ''}".rstrip()
    return result.model_copy(update={"outcome_summary": summary})

"""The call order's activities: thin and idempotent; the providers do the work."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.providers import Analyzer, Telephony
from models.assistant import DEFAULT_ASSISTANT_PROMPT, Assistant, call_assistant_from
from models.retry import CallRetryConfig
from models.settings import Settings
from models.workflow_io import (
    AnalysisResult,
    AnalyzeRequest,
    ConverseRequest,
    ConverseResult,
    DialRequest,
    DialResult,
    PreparedOrder,
    PrepareRequest,
)
from workflows.schedule import resolve_timezones

INVALID_ORDER = "InvalidCallOrder"


class CallActivities:
    def __init__(self, settings: Settings, telephony: Telephony, analyzer: Analyzer) -> None:
        self.settings = settings
        self.telephony = telephony
        self.analyzer = analyzer

    @activity.defn(name="prepare_order")
    async def prepare_order(self, request: PrepareRequest) -> PreparedOrder:
        """Resolve the assistant, the caller id and the recipient's timezones (status `initializing`)."""
        if request.assistant_id is not None:
            # Stored assistants arrive with the HTTP API's storage; until then an id cannot resolve.
            raise ApplicationError(
                f"assistant_id: assistant {request.assistant_id} not found",
                type=INVALID_ORDER,
                non_retryable=True,
            )
        inline = request.assistant or Assistant(prompt=DEFAULT_ASSISTANT_PROMPT)
        assistant = call_assistant_from(
            inline,
            id=f"inline-{request.call_id}",
            organization_id=request.organization_id,
            now=datetime.now(UTC),
        )
        retry = inline.call_retry_config or CallRetryConfig()
        return PreparedOrder(
            assistant=assistant,
            from_phone_number=request.from_phone_number
            or inline.from_phone_number
            or self.settings.default_from_phone_number,
            zones=resolve_timezones(request.to_phone_number, retry.timezone),
            retry=retry,
        )

    @activity.defn(name="dial")
    async def dial(self, request: DialRequest) -> DialResult:
        return await self.telephony.dial(request)

    @activity.defn(name="converse")
    async def converse(self, request: ConverseRequest) -> ConverseResult:
        return await self.telephony.converse(request)

    @activity.defn(name="analyze")
    async def analyze(self, request: AnalyzeRequest) -> AnalysisResult:
        return await self.analyzer.analyze(request)

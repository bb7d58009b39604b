"""Provider protocols: the activities talk to telephony and analysis only through these."""

from __future__ import annotations

from typing import Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.settings import ConfigError, Settings
from models.workflow_io import (
    AnalysisResult,
    AnalyzeRequest,
    ConverseRequest,
    ConverseResult,
    DialRequest,
    DialResult,
    HangUpRequest,
)

# A dial that started after its calling window closed (a worker backlog, workers down): it rings nobody,
# and the order waits for the next window without counting an attempt.
DIAL_TOO_LATE = "DialTooLate"


def refuse_to_ring_late(request: DialRequest) -> None:
    """DIAL_TOO_LATE when this try of the dial started (the server's clock, the workflow's) after
    `ring_by`. The activity asks it of a first try; a provider asks it before it rings afresh, so a
    retry still reads the ring an earlier try started, whatever the time."""
    if request.ring_by is None or not activity.in_activity():
        return
    started = activity.info().started_time
    if started > request.ring_by:
        raise ApplicationError(
            f"the dial started at {started.isoformat()}, after its calling window closed at "
            f"{request.ring_by.isoformat()}: it rang nobody",
            type=DIAL_TOO_LATE,
            non_retryable=True,
        )


class Telephony(Protocol):
    """Places one attempt's call and holds its conversation. Must be idempotent per attempt id, and ask
    `refuse_to_ring_late` before it rings afresh."""

    name: str

    async def dial(self, request: DialRequest) -> DialResult: ...

    async def converse(self, request: ConverseRequest) -> ConverseResult: ...

    async def end_call(self, request: HangUpRequest) -> None:
        """Hang up the attempt's call, if it is still up (its dial or agent is gone): idempotent."""
        ...


class Analyzer(Protocol):
    """Turns a transcript into structured output and an outcome."""

    name: str

    async def analyze(self, request: AnalyzeRequest) -> AnalysisResult: ...


def telephony_from(settings: Settings) -> Telephony:
    if settings.telephony == "simulated":
        from pathlib import Path

        from activities.simulated import SimulatedTelephony

        ledger = settings.simulated_ring_ledger
        return SimulatedTelephony(Path(ledger) if ledger else None)
    if settings.telephony == "livekit":
        from activities.livekit import LiveKitTelephony

        return LiveKitTelephony(settings)
    raise ConfigError(f"OUTDIAL_TELEPHONY={settings.telephony!r}: use 'simulated' or 'livekit'")


def analyzer_from(settings: Settings) -> Analyzer:
    if settings.analyzer == "simulated":
        from activities.simulated import SimulatedAnalyzer

        return SimulatedAnalyzer()
    from activities.analysis import OpenAIAnalyzer

    return OpenAIAnalyzer(settings)


def check_providers(settings: Settings) -> None:
    """Build the telephony and SMS providers the settings choose, before anything starts: a missing
    credential is a ConfigError, one line, not a worker that fails once connected (a traceback)."""
    from activities.sms import sms_provider_from

    telephony_from(settings)
    sms_provider_from(settings)


def provider_warnings(settings: Settings) -> list[str]:
    """What the settings leave some calls without, said when a worker starts: not refused, since it may
    be on purpose (assistants that all bring their own LLM endpoint need no default one)."""
    if settings.analyzer == "openai" and not (settings.openai_api_key or settings.openai_base_url):
        return [
            "the openai analyzer has no OPENAI_API_KEY (nor OPENAI_BASE_URL): the calls of assistants "
            "without an LLM endpoint of their own"
            + (" or OpenRouter's" if settings.openrouter_api_key else "")
            + " will end without an outcome"
        ]
    return []

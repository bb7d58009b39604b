"""Provider protocols: the activities talk to telephony and analysis only through these."""

from __future__ import annotations

from typing import Protocol

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


class Telephony(Protocol):
    """Places one attempt's call and holds its conversation. Must be idempotent per attempt id."""

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

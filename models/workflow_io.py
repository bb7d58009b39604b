"""What CallOrderWorkflow and its activities pass each other (pydantic, via the pydantic data converter)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from models.assistant import Assistant, CallAssistant
from models.call import TranscriptEntry, bounded_transcript
from models.common import AttemptResult, DialError, EndedBy, KnownEndReason, Outcome
from models.retry import CallRetryConfig


class PrepareRequest(BaseModel):
    """What `prepare_order` needs of the order; the inline assistant travels as the request gave it."""

    call_id: str
    organization_id: str
    to_phone_number: str
    assistant_id: str | None = None
    assistant: Assistant | None = None
    from_phone_number: str | None = None
    call_retry_config: CallRetryConfig | None = None  # a campaign's, over the assistant's
    created_at: AwareDatetime | None = None  # when the order was placed: the inline assistant's timestamps
    accepted: bool = False  # the API or a campaign accepted it: its row holds what it was resolved to then


class PreparedOrder(BaseModel):
    """The order once `initializing` is over: who calls, as whom, in which timezones, under which rules."""

    assistant: CallAssistant
    from_phone_number: str
    zones: list[str]
    retry: CallRetryConfig
    livekit_outbound_trunk_id: str | None = None  # the from number's trunk; None: the default trunk


class DialRequest(BaseModel):
    call_id: str
    attempt_id: str  # the idempotency key: one attempt never rings the phone twice
    attempt_number: int
    to_phone_number: str
    from_phone_number: str
    max_call_duration_secs: float | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # The from number's LiveKit outbound trunk; when None, `dial` looks it up in the organization's
    # phone numbers (another organization's record of the same number never counts).
    livekit_outbound_trunk_id: str | None = None
    organization_id: str | None = None  # None: scheduled before orders said it; no record is read
    accepted_trunk_id: str | None = None  # the trunk prepare_order found: kept if the number is deleted
    # When the calling window it was sent in closes (None: force_now, or sent before dials said it): a
    # dial that starts later, behind a worker backlog, refuses to ring (`DIAL_TOO_LATE`).
    ring_by: AwareDatetime | None = None


class DialResult(BaseModel):
    answered: bool
    dial_error: DialError | None = None
    session: str | None = None  # the provider's handle on the live call (e.g. a LiveKit room)
    answered_at: AwareDatetime | None = None  # when the provider saw the callee pick up


class HangUpRequest(BaseModel):
    """An attempt's call to end: its session (a LiveKit room) when the dial gave one."""

    attempt_id: str
    session: str | None = None


class ConverseRequest(BaseModel):
    call_id: str
    attempt_id: str
    attempt_number: int
    session: str | None = None
    to_phone_number: str
    from_phone_number: str
    assistant: CallAssistant
    prompt_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)


class ConverseResult(BaseModel):
    result: AttemptResult
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    ended_by: EndedBy | None = None
    end_reason: KnownEndReason = None
    recording_url: str | None = None
    # When the call itself says the callee picked up and the line closed (a real provider's clock);
    # None for simulated calls, whose times are the workflow's.
    answered_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    # Simulated calls only: how long the call lasts on the workflow's clock (a durable timer), so
    # time-skipping tests run hour-long calls in milliseconds. A real call is over when converse returns.
    hold_seconds: float = 0

    @field_validator("transcript")
    @classmethod
    def _bounded(cls, transcript: list[TranscriptEntry]) -> list[TranscriptEntry]:
        return bounded_transcript(transcript)  # every later step of the order carries it


class AnalyzeRequest(BaseModel):
    call_id: str
    attempt_id: str
    assistant: CallAssistant
    transcript: list[TranscriptEntry]
    to_phone_number: str
    from_phone_number: str
    direction: str = "outbound"


class AnalysisResult(BaseModel):
    structured_output: dict[str, object] | None = None
    outcome: Outcome | None = None
    outcome_summary: str | None = None

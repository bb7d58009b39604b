"""The seed's `POST /call`: the strict request `CallCreateParams` and the lenient response `Call`.

How to dump a Call (API responses, webhooks, the workflow's `call` query): `call.model_dump(mode="json")`
with no `exclude_none`/`exclude_unset`. Every key the seed lists is then present, in the seed's order,
with null for unset nullable fields; `{}` timestamps stay `{}` and ours are ISO 8601 UTC ('...Z').
The official client's newer keys follow the seed's: a Call's `contact`, an attempt's `handled_by_ai` and
`handled_by_human` (derived when a stored Call predates them).
`Call.model_validate(dumped)` gives the same Call back.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from models.assistant import (
    DEFAULT_FIRST_SENTENCE_DELAY_MS,
    Assistant,
    CallAssistant,
    LlmModelRecord,
    Number,
    Record,
    RetryConfigRecord,
    Timestamp,
    default_llm_model,
    located_error,
)
from models.common import (
    E164,
    MAX_SAFE_INT,
    AttemptResult,
    AttemptStatus,
    CallStatus,
    DialError,
    Direction,
    EndedBy,
    KnownEndReason,
    Outcome,
    TranscriptRole,
)

# --- request ---------------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def is_call_id(value: str) -> bool:
    """A call id as the API makes them: a UUID, canonical and lowercase (its workflow: `call-<it>`)."""
    return bool(_UUID.fullmatch(value)) and value == value.lower()


def _check_uuid(value: str) -> str:
    """A UUID in its canonical 8-4-4-4-12 form; stored lowercase."""
    if not _UUID.fullmatch(value):
        raise ValueError(f"{value!r} is not a UUID (e.g. 123e4567-e89b-12d3-a456-426614174000)")
    return str(uuid.UUID(value))


def _parse_instant(value: Any) -> Any:
    """ISO 8601 text or a datetime; anything else (numbers, objects) is refused."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().upper())  # RFC 3339 allows "t" and "z" too
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time (e.g. 2025-06-02T09:30:00Z)") from None
    raise ValueError("must be an ISO 8601 date-time string")


def _to_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:30:00-01:00 is after the last instant a datetime holds
        raise ValueError("is out of range once in UTC") from None


_FORCE_NOW_KEYS = ("force_now", "skip_calling_window")

UuidStr = Annotated[str, AfterValidator(_check_uuid)]
UtcDateTime = Annotated[datetime, BeforeValidator(_parse_instant), AfterValidator(_to_utc)]


def _a_number(value: Any) -> Any:
    """The seed types it as a number: JSON true or "3" is not one (pydantic's lax int would take both)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


Count = Annotated[int, BeforeValidator(_a_number)]
"""An instant: ISO 8601 text or datetime in, aware UTC datetime out (naive input is taken as UTC)."""


# A key names its semaphore workflow (`concurrency-<organization id>:<key>`, within Temporal's 1,000-byte
# workflow ids) and is a Keyword search attribute (2 KB): a longer one could never take a permit.
CONCURRENCY_KEY_MAX_BYTES = 255


# Every step of an order carries its prompt variables and metadata, and each attempt's transcript, through
# Temporal, whose payloads stop at 2 MB (an order past it after its call was stuck for good: its workflow
# task failing without end, a cancel unheard) and histories at 50 MB (an order past it terminated, read as
# cancelled). Each attempt carries its metadata some 9 times, its variables 6 (measured): with an assistant
# of at most 256 KB, 50 attempts stay within some 40 MB of history. An hour's talk is some 60 KB of text.
CARRIED_MAX_BYTES = 64 * 1024
TRANSCRIPT_MAX_BYTES = 256 * 1024
_ENTRY_MAX_BYTES = TRANSCRIPT_MAX_BYTES // 16
_LEFT_OUT = " […] "
_GAP_MAX_BYTES = 256  # the entry standing for the turns left out of a transcript's middle (JSON: 145)


def carried_too_much(params: CallCreateParams) -> str | None:
    """Why an order's prompt variables and metadata are more than it can carry (see CARRIED_MAX_BYTES)."""
    size = sum(
        len(json.dumps(values, ensure_ascii=False).encode())
        for values in (params.prompt_variables, params.metadata)
        if values
    )
    if size <= CARRIED_MAX_BYTES:
        return None
    return (
        f"its prompt_variables and metadata are {size} bytes of JSON, at most {CARRIED_MAX_BYTES} together "
        "(each attempt carries them through Temporal many times, whose histories stop at 50 MB)"
    )


def _cut(text: str | None, limit: int) -> str | None:
    """`text` within `limit` bytes of UTF-8: its start and its end, what lies between left out."""
    if text is None or len(text) * 4 <= limit or len(encoded := text.encode()) <= limit:
        return text
    half = (limit - len(_LEFT_OUT.encode())) // 2
    head = encoded[:half].decode(errors="ignore")
    return head + _LEFT_OUT + encoded[-half:].decode(errors="ignore")


def bounded_transcript(entries: list[TranscriptEntry]) -> list[TranscriptEntry]:
    """A transcript within TRANSCRIPT_MAX_BYTES: each entry's text cut to a sixteenth of it, then, if
    still over, the call's middle turns left out, one entry saying how many (its start and end tell most:
    who answered, how it ended)."""
    characters = sum(
        len(e.content) + len(e.tool_output or "") + len(str(e.tool_arguments or "")) for e in entries
    )
    if characters * 4 <= TRANSCRIPT_MAX_BYTES:
        return entries  # surely within (4 bytes at most per character): the usual call, at once
    if sum(len(e.model_dump_json().encode()) for e in entries) <= TRANSCRIPT_MAX_BYTES:
        return entries
    cut = [
        e.model_copy(
            update={
                "content": _cut(e.content, _ENTRY_MAX_BYTES),
                "tool_output": _cut(e.tool_output, _ENTRY_MAX_BYTES),
            }
        )
        for e in entries
    ]
    sizes = [len(e.model_dump_json().encode()) for e in cut]
    if sum(sizes) <= TRANSCRIPT_MAX_BYTES:
        return cut
    budget, first, last = TRANSCRIPT_MAX_BYTES - _GAP_MAX_BYTES, 0, len(cut) - 1
    while first <= last:  # from both ends towards the middle, in turn
        index = first if first <= len(cut) - 1 - last else last  # as many from the start as from the end
        if sizes[index] > budget:
            break
        budget -= sizes[index]
        first, last = (first + 1, last) if index == first else (first, last - 1)
    gap = TranscriptEntry(role=cut[first].role, content=f"[… {last - first + 1} turns left out …]")
    return [*cut[:first], gap, *cut[last + 1 :]]


def _short_key(key: str) -> str:
    if len(key.encode()) > CONCURRENCY_KEY_MAX_BYTES:
        raise ValueError(f"at most {CONCURRENCY_KEY_MAX_BYTES} bytes (UTF-8)")
    return key


class Concurrency(BaseModel):
    """At most `max` of the calls sharing `key` run at once; `max` is a whole number (3 or 3.0).

    Without `max` (the newer client sends only the key: "the limit itself is set server-side") the
    key's current limit applies: the last max an order gave it, else OUTDIAL_CONCURRENCY_DEFAULT_MAX."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, AfterValidator(_short_key)] = Field(min_length=1)
    max: Count | None = Field(default=None, ge=1, le=MAX_SAFE_INT)


class CallCreateParams(BaseModel):
    """The body of `POST /call`, and the single argument of CallOrderWorkflow."""

    model_config = ConfigDict(extra="ignore")  # newer clients' fields must not break us

    phone_number: E164
    assistant: Assistant | None = None
    assistant_id: UuidStr | None = None
    concurrency: Concurrency | None = None
    force_now: Annotated[bool, Strict()] = Field(
        default=False, validation_alias=AliasChoices("force_now", "skip_calling_window")
    )
    from_phone_number: E164 | None = None
    metadata: dict[str, str] | None = None
    prompt_variables: dict[str, str] | None = None
    scheduled_at: UtcDateTime | None = None

    @model_validator(mode="before")
    @classmethod
    def _force_now_synonym(cls, data: Any) -> Any:
        # The seed's force_now is Optional: null means "not given", so a null never hides the synonym.
        if not isinstance(data, dict):
            return data
        given = {key: data[key] for key in _FORCE_NOW_KEYS if data.get(key) is not None}
        if len(given) == 2 and given["force_now"] != given["skip_calling_window"]:
            raise located_error(
                ("skip_calling_window",),
                "skip_calling_window is a synonym of force_now; they must not differ",
                given["skip_calling_window"],
            )
        return {k: v for k, v in data.items() if k not in _FORCE_NOW_KEYS} | dict(list(given.items())[:1])

    @model_validator(mode="after")
    def _one_assistant(self) -> CallCreateParams:
        if self.assistant is not None and self.assistant_id is not None:
            raise located_error(
                ("assistant_id",), "give either assistant_id or assistant, not both", self.assistant_id
            )
        return self

    @property
    def skip_calling_window(self) -> bool:
        """The newer client's name for `force_now`."""
        return self.force_now


# --- response --------------------------------------------------------------------------------------


class TranscriptEntry(Record):
    content: str
    role: TranscriptRole
    tool_arguments: dict[str, Any] | str | None = None
    tool_is_error: bool | None = None
    tool_name: str | None = None
    tool_output: str | None = None


class CallAttempt(Record):
    """One dial of the number; a call order has one or more."""

    id: str
    answered_at: Timestamp = None
    dial_error: DialError | None = None
    ended_at: Timestamp = None
    phone_number: str
    recording_url: str | None = None
    result: AttemptResult | None = None
    started_at: Timestamp = None
    status: AttemptStatus = "queued"
    end_reason: KnownEndReason = None
    ended_by: EndedBy | None = None
    structured_output: dict[str, Any] | None = None
    transcript: list[TranscriptEntry] | None = None
    handled_by_ai: bool = False
    handled_by_human: bool = False

    @model_validator(mode="after")
    def _handled_by(self) -> CallAttempt:
        """The client's `handled_by_*`, derived when a stored attempt predates them: the agent talks
        to whoever answers; a human colleague takes part only after a transfer."""
        if "handled_by_ai" not in self.model_fields_set:
            self.handled_by_ai = bool(self.answered_at)
        if "handled_by_human" not in self.model_fields_set:
            self.handled_by_human = self.transferred
        return self

    @property
    def transferred(self) -> bool:
        """The agent handed the callee to a human."""
        return self.end_reason == "transfer"


ORDER_WORKFLOW_PREFIX = "call-"


def order_workflow_id(call_id: str) -> str:
    """A call order's CallOrderWorkflow id, `call-<call id>` (the workflow reads its call id back)."""
    return f"{ORDER_WORKFLOW_PREFIX}{call_id}"


CONTACT_FIELDS = ("company", "email", "first_name", "job_title", "last_name")


class CallContact(Record):
    """The client's "magic contact variables": who the prospect is (`contact_of`)."""

    company: str | None = None
    email: str | None = None
    first_name: str | None = None
    job_title: str | None = None
    last_name: str | None = None


def contact_of(
    prompt_variables: dict[str, str] | None,
    metadata: dict[str, str] | None,
    attempts: list[CallAttempt],
) -> CallContact:
    """Each contact field from the latest extraction that found it (what the callee said on the
    phone, e.g. a corrected email, wins), else the order's prompt_variables, else its metadata."""
    sources = [a.structured_output or {} for a in attempts] + [prompt_variables or {}, metadata or {}]
    found: dict[str, str] = {}
    for name in CONTACT_FIELDS:
        values = (source.get(name) for source in sources)
        value = next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)
        if value is not None:
            found[name] = value
    return CallContact(**found)


class CallCampaign(Record):
    id: str
    name: str


class Call(Record):
    """A call order as the API returns it. Dump with `call.model_dump(mode="json")` (module docstring).

    `is_cancelled`, `is_completed`, `calls_count` and `last_call_attempt` are derived from `status` and
    `call_attempts` (most recent first); `with_derived_fields()` recomputes them. They are not derived on
    validation, so whatever the API returned reads back unchanged.
    """

    id: str
    assistant: CallAssistant | None = None
    call_attempts: list[CallAttempt] = Field(default_factory=list)
    call_retry_config: RetryConfigRecord | None = None
    calls_count: Number = 0
    campaign: CallCampaign | None = None
    created_at: Timestamp = None
    direction: Direction = "outbound"
    first_sentence_delay_ms: int = DEFAULT_FIRST_SENTENCE_DELAY_MS
    from_phone_number: str
    is_cancelled: bool = False
    is_completed: bool = False
    last_call_attempt: CallAttempt | None = None
    llm_model: LlmModelRecord = Field(default_factory=default_llm_model)
    metadata: dict[str, str] | None = None
    organization_id: str
    prompt_variables: dict[str, str] | None = None
    scheduled_at: Timestamp = None
    status: CallStatus = "initializing"
    to_phone_number: str
    updated_at: Timestamp = None
    outcome: Outcome | None = None
    outcome_summary: str | None = None
    contact: CallContact = Field(default_factory=CallContact)  # the official client's, newer than the seed

    @model_validator(mode="after")
    def _contact(self) -> Call:
        """Derived when not given: a new Call, or a stored one that predates the field."""
        if "contact" not in self.model_fields_set:
            self.contact = contact_of(self.prompt_variables, self.metadata, self.call_attempts)
        return self

    def with_derived_fields(self) -> Call:
        """A copy whose deprecated flags, count and last attempt agree with status and attempts."""
        return self.model_copy(
            update={
                "is_cancelled": self.status == "cancelled",
                "is_completed": self.status == "completed",
                "calls_count": len(self.call_attempts),
                "last_call_attempt": self.call_attempts[0] if self.call_attempts else None,
                "contact": contact_of(self.prompt_variables, self.metadata, self.call_attempts),
            }
        )


class CallCreateResponse(Record):
    """The response of `POST /call`."""

    call: Call

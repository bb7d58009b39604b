"""Shared literals and validators for the seed's schemas.

Validators raise ValueError with a plain message; pydantic attaches the field's location, so every
error names the field it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import time
from typing import Annotated, Any, Literal, get_args

import phonenumbers
import pytz
from pydantic import AfterValidator, BeforeValidator, Field


def error_summary(
    errors: Iterable[Mapping[str, Any]], *, skip: tuple[str, ...] = (), limit: int | None = None
) -> str:
    """pydantic's errors in one line, `field.path: message; ...` (their messages, never the values
    given, which may be secrets); `skip`: what a location may start with to leave out (a request's
    `body`: a field named `query` further in is named), `limit`: how many to name before "(and N more)"."""
    errors = list(errors)
    parts = []
    for error in errors[:limit]:
        where = list(error["loc"])
        loc = ".".join(str(part) for part in (where[1:] if where and where[0] in skip else where))
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    more = f" (and {len(errors) - limit} more)" if limit is not None and len(errors) > limit else ""
    return "; ".join(parts) + more


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)

CallStatus = Literal[
    "not_launched",  # a campaign row's call, materialized at creation, before its launch (no workflow yet)
    "initializing",
    "scheduled",
    "queued_for_calling",
    "calling",
    "paused",
    "post_processing",
    "completed",
    "cancelled",
    "errored",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled", "errored"})
AttemptStatus = Literal["queued", "ringing", "ongoing", "completed", "error"]
AttemptResult = Literal["IVR", "voicemail", "human", "unknown", "ios-screening-filter"]
ResultOrNone = Literal[(*get_args(AttemptResult), "none")]  # type: ignore[valid-type]
DialError = Literal[
    "number_non_attributed",
    "too_many_calls",
    "busy",
    "temporarily_unavailable",
    "no_answer",
    "no_international_permission",
    "precondition_failed",
    "non_classified_error",
]
Outcome = Literal[
    "not_interested",
    "interested",
    "completed",
    "requested_callback_later",
    "requested_callback_new_number",
    "do_not_contact",
]
# An outcome or a result, or "none" (the official client's word for a call without one): one literal, not
# a union of two, so an error is located at the list's index (not at the union's member tags) and said once.
OutcomeOrNone = Literal[(*get_args(Outcome), "none")]  # type: ignore[valid-type]
EndedBy = Literal["agent", "user", "system"]
# The official client's words for why an attempt ended (the seed types it as any string, its examples
# from this list): most are LiveKit's disconnect reasons, lower-cased.
EndReason = Literal[
    "client_initiated",  # the callee hung up
    "connection_timeout",
    "human_takeover",
    "ivr_no_navigate",
    "max_duration",
    "participant_removed",  # the order was cancelled: the call was taken down
    "tool_end_call",
    "transfer",  # handed to a human (the assistant's human_transfer_mode says warm or cold)
    "user_inactive",
    "user_rejected",
    "user_unavailable",
    "voicemail",
    "speed_dial_abandoned",
    "speed_dial_operator_missed",
    "speed_dial_timeout",
    "speed_dial_hangup",
]
END_REASONS: frozenset[str] = frozenset(get_args(EndReason))
# What earlier versions wrote instead, still in stored attempts and in running orders' state, in the
# client's words; what they wrote that has none (a step's failure, a screening assistant, a vanished
# agent) reads as None.
_EARLIER_END_REASONS = {
    "transferred_warm": "transfer",
    "transferred_cold": "transfer",
    "order_cancelled": "participant_removed",
    "user_hangup": "client_initiated",
    "voicemail_unavailable": "voicemail",
    "order_errored": None,
    "screening": None,
    "agent_lost": None,
}


def in_the_clients_words(value: object) -> object:
    """An end reason an earlier version wrote, read in the client's words. Any other string stays as it
    is: the seed types the field as a string, and a newer voice agent's word must not stall its order."""
    if not isinstance(value, str) or value in END_REASONS:
        return value
    if value.startswith(("dial failed: ", "conversation failed: ")):
        return None
    return _EARLIER_END_REASONS.get(value, value)


KnownEndReason = Annotated[str | None, BeforeValidator(in_the_clients_words)]
TranscriptRole = Literal["user", "assistant", "tool"]
FieldType = Literal["string", "number", "boolean", "enum", "date", "datetime"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
FirstSentenceMode = Literal["generated", "static", "none"]
TransferMode = Literal["warm", "cold"]
BackgroundSound = Literal["audio/office.ogg"]
ThinkingSound = Literal[
    "city-ambience.ogg",
    "forest-ambience.ogg",
    "office-ambience.ogg",
    "crowded-room.ogg",
    "keyboard-typing.ogg",
    "keyboard-typing2.ogg",
    "hold_music.ogg",
]
VoiceProvider = Literal["cartesia", "elevenlabs"]
# The official client's: its transcriber model (the agent's own comes from OUTDIAL_STT_MODEL) and the
# assistant's kind; both stored and shown as given, the client requires them in every response
SttModel = Literal["stt-rt-v4", "stt-rt-v5"]
AssistantType = Literal["standalone", "multi-step", "sub-assistant"]
Direction = Literal["inbound", "outbound"]

MAX_SAFE_INT = 9007199254740991

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # fullmatch: no trailing newline, ASCII digits
_WRITTEN = re.compile(r"\+[1-9][0-9]{6,14}")  # a configured number: at least a subscriber's 7 digits
_CLOCK_24H = re.compile(r"(?P<h>[01]?[0-9]|2[0-3]):(?P<m>[0-5][0-9])")
_CLOCK_12H = re.compile(r"(?P<h>1[0-2]|0?[1-9])(?::(?P<m>[0-5][0-9]))?\s?(?P<ampm>[ap])\.?m\.?", re.I)


def check_e164(value: str) -> str:
    """A phone number in E.164 form that `phonenumbers` considers valid (a real, assignable number),
    as E.164 writes it: `+330612345678` (the trunk's 0 kept, as contact lists often do) is
    `+33612345678`, so the do-not-contact list and a campaign's duplicates see one number."""
    if not _E164.fullmatch(value):
        raise ValueError(f"{value!r} is not an E.164 phone number (e.g. +33612345678)")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as err:
        raise ValueError(f"{value!r} is not a phone number: {err}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{value!r} is not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def canonical_number(value: str) -> str:
    """`value` as `check_e164` writes it, or as it is when it is no valid number."""
    try:
        return check_e164(value)
    except ValueError:
        return value


# How people write a number: `+33 6 12 34 99 99`, `+1 (415) 555-0100`, `06.12.34.99.99`.
_NUMBER_SEPARATORS = re.compile(r"[\s().\-\u2010-\u2015]")


def without_separators(value: str) -> str:
    """`value` without the spaces, dashes, dots and parentheses people write numbers with."""
    return _NUMBER_SEPARATORS.sub("", value)


def written_number(value: str, *, assigned: bool) -> str:
    """A number as written in a configuration (`+33 1 59 00 00 00`) as E.164 writes it. Unless it must be
    `assigned` (real telephony: a typo would dial, or never match, in vain), one `phonenumbers` does not
    know as assigned (`+1 555 555 0100`, a fictional one for a simulated stack) is kept in E.164 form;
    anything else is a ValueError."""
    number = without_separators(value)
    try:
        return check_e164(number)
    except ValueError:
        if not assigned and _WRITTEN.fullmatch(number):
            return number
        raise


def typed_number(value: str) -> str:
    """A number as a person types it, separators and all, as E.164 writes it when it is one (a search
    by the number an order was placed with finds it, however it was written); else as given."""
    try:
        return check_e164(without_separators(value))
    except ValueError:
        return value


def check_timezone(value: str) -> str:
    """An IANA timezone name known to pytz (e.g. Europe/Paris)."""
    if value not in pytz.all_timezones_set:
        raise ValueError(f"{value!r} is not an IANA timezone (e.g. Europe/Paris)")
    return value


def parse_clock(value: str) -> time:
    """Parse 'HH:mm' (24-hour) or 'H:mma' (12-hour: '6pm', '9:30am'); '24:00' is not accepted."""
    text = value.strip()
    if m := _CLOCK_24H.fullmatch(text):
        return time(int(m["h"]), int(m["m"]))
    if m := _CLOCK_12H.fullmatch(text):
        hour = int(m["h"]) % 12 + (12 if m["ampm"].lower() == "p" else 0)
        return time(hour, int(m["m"] or 0))
    raise ValueError(f"{value!r} is not a time of day as 'HH:mm' (e.g. 17:00) or 'H:mma' (e.g. 6pm)")


def check_clock(value: str) -> str:
    parse_clock(value)
    return value


E164 = Annotated[str, AfterValidator(check_e164)]
# A TTS provider's voice id (Cartesia's are UUIDs, ElevenLabs' letters and digits). It goes into the
# provider's URLs with the operator's key, so it may hold nothing that changes a path ("../").
VoiceId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
Timezone = Annotated[str, AfterValidator(check_timezone)]
ClockTime = Annotated[str, AfterValidator(check_clock)]

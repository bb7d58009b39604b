"""The simulated callee and analyzer: real adapters behind the provider protocols, no accounts needed.

The callee's behaviour per attempt comes from the order's `metadata["simulation"]` (DESIGN.md):
comma-separated tokens, one per attempt, the last one repeating; absent means `human:interested`.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from activities.analysis import FieldLike, field_problem, validate_output
from activities.providers import refuse_to_ring_late
from agent.prompt import call_variables, interpolate
from models import TranscriptEntry
from models.assistant import CallAssistant
from models.common import DialError
from models.workflow_io import (
    AnalysisResult,
    AnalyzeRequest,
    ConverseRequest,
    ConverseResult,
    DialRequest,
    DialResult,
    HangUpRequest,
)

DIAL_ERRORS: frozenset[DialError] = frozenset(
    {"no_answer", "busy", "temporarily_unavailable", "number_non_attributed", "no_international_permission"}
)
ANSWERED = frozenset({"human", "voicemail", "ivr", "ios-screening-filter"})
HUMAN_INTENTS = {
    "interested": "That sounds great, I'm interested. Please send me the details.",
    "not_interested": "No thanks, I'm not interested.",
    "completed": "Perfect, that's all sorted then. Thank you.",
    "callback_later": "I'm in a meeting right now, can you call me back later?",
    "new_number": "Please call me on my other number instead, this one is for work.",
    "do_not_contact": "Please do not contact me again.",
    "transfer": "Could I speak to a real person, please?",
}
SIMULATION_KEY = "simulation"
CALL_SECONDS_KEY = "simulation.call_seconds"
RING_SECONDS_KEY = "simulation.ring_seconds"


def simulation_token(metadata: dict[str, str], attempt_number: int) -> str:
    """The callee's behaviour on this attempt, in lower case as a person would type it either way; raises a
    non-retryable error for an unknown token."""
    given = metadata.get(SIMULATION_KEY, "human:interested").lower()
    tokens = [t.strip() for t in given.split(",") if t.strip()]
    tokens = tokens or ["human:interested"]
    token = tokens[min(attempt_number, len(tokens)) - 1]
    kind, _, intent = token.partition(":")
    valid = kind in DIAL_ERRORS or (
        kind in ANSWERED and (not intent or (kind == "human" and intent in HUMAN_INTENTS))
    )
    if not valid:
        raise ApplicationError(
            f"metadata.simulation: unknown token {token!r}", type="InvalidSimulation", non_retryable=True
        )
    return token


def simulated_seconds(metadata: dict[str, str], key: str) -> float:
    """A simulated length (`simulation.call_seconds`, `simulation.ring_seconds`): a finite number of
    seconds, at most a year; anything else is a non-retryable error, so the order ends errored."""
    raw = metadata.get(key, "0") or "0"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 366 * 86400:
        raise ApplicationError(
            f"metadata.{key}: {raw!r} is not a number of seconds from 0 to a year",
            type="InvalidSimulation",
            non_retryable=True,
        )
    return seconds


class SimulatedRing(BaseModel):
    """One ring of the simulated trunk, as its ledger records it."""

    attempt_id: str
    call_id: str
    attempt_number: int
    to: str
    rang_at: datetime


class SimulatedRingLedger:
    """The simulated trunk's durable record of every ring: a JSON-lines file, shared by every worker
    process (`OUTDIAL_SIMULATED_RING_LEDGER`), appended under an exclusive lock.

    It is what makes a simulated dial idempotent across crashes (a worker killed mid-ring leaves the
    ring on record; the retried dial finds it and waits for the same callee), and what fault tests read
    to prove that no attempt rang the phone twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ring_once(self, request: DialRequest, before_ringing: Callable[[], None]) -> SimulatedRing:
        """The attempt's ring: the recorded one if it rang before, else a new one, recorded now (unless
        `before_ringing` refuses it: a dial started after its window closed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as ledger:
            fcntl.flock(ledger, fcntl.LOCK_EX)  # released when the file closes
            ledger.seek(0)
            for line in ledger:
                ring = SimulatedRing.model_validate_json(line)
                if ring.attempt_id == request.attempt_id:
                    return ring
            before_ringing()
            ring = SimulatedRing(
                attempt_id=request.attempt_id,
                call_id=request.call_id,
                attempt_number=request.attempt_number,
                to=request.to_phone_number,
                rang_at=datetime.now(UTC),
            )
            ledger.write(ring.model_dump_json() + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())
            return ring

    def rings(self) -> list[SimulatedRing]:
        if not self.path.exists():
            return []
        return [SimulatedRing.model_validate_json(line) for line in self.path.read_text().splitlines()]


class SimulatedTelephony:
    """A simulated trunk and callee. Every attempt rings once (see `rings` and the optional ledger).

    `metadata["simulation.ring_seconds"]` (default 0) is how long the phone rings before the callee
    answers or the dial fails, spent inside the dial like a real trunk's wait for an answer (wall clock,
    not the workflow's: it is what a worker crash can interrupt)."""

    name = "simulated"

    def __init__(self, ledger: Path | None = None) -> None:
        self.rings: dict[str, datetime] = {}  # attempt id -> when it rang (this process)
        self.ledger = SimulatedRingLedger(ledger) if ledger else None

    async def dial(self, request: DialRequest) -> DialResult:
        kind = simulation_token(request.metadata, request.attempt_number).partition(":")[0]
        rang_at = self.rings.get(request.attempt_id)
        if rang_at is None:  # a retried dial never rings twice: it waits for the same ring's callee
            if self.ledger:
                refusal = functools.partial(refuse_to_ring_late, request)
                rang_at = (await asyncio.to_thread(self.ledger.ring_once, request, refusal)).rang_at
            else:
                refuse_to_ring_late(request)
                rang_at = datetime.now(UTC)
            self.rings[request.attempt_id] = rang_at
        ring_seconds = simulated_seconds(request.metadata, RING_SECONDS_KEY)
        remaining = (rang_at + timedelta(seconds=ring_seconds) - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            await asyncio.sleep(remaining)
        if kind in DIAL_ERRORS:
            return DialResult(answered=False, dial_error=kind)  # type: ignore[arg-type]
        return DialResult(answered=True, session=f"simulated-{request.attempt_id}")

    async def end_call(self, request: HangUpRequest) -> None:
        """Nothing rings on after a simulated step has ended: there is no line to take down."""

    async def converse(self, request: ConverseRequest) -> ConverseResult:
        token = simulation_token(request.metadata, request.attempt_number)
        kind, _, intent = token.partition(":")
        hold = simulated_seconds(request.metadata, CALL_SECONDS_KEY)
        assistant = request.assistant
        variables = call_variables(  # as the voice agent fills them in
            request.call_id, request.to_phone_number, request.from_phone_number, request.prompt_variables
        )
        limit = float(assistant.max_call_duration_secs or 0)  # no call outlasts it, simulated or not
        capped = min(hold, limit) if limit > 0 else hold
        if kind == "voicemail":
            turns = [
                TranscriptEntry(role="user", content="You've reached my voicemail, please leave a message.")
            ]
            if assistant.voicemail_message:
                message = interpolate(assistant.voicemail_message, variables)
                turns.append(TranscriptEntry(role="assistant", content=message))
            return ConverseResult(
                result="voicemail",
                transcript=turns,
                ended_by="agent",
                end_reason="voicemail",
                hold_seconds=capped,
            )
        menu: list[TranscriptEntry] = []  # the phone menu the agent went through to reach the person
        if kind == "ivr":
            menu = [TranscriptEntry(role="user", content=_MENU)]
            if not assistant.ivr_navigation_enabled:
                return ConverseResult(
                    result="IVR",
                    transcript=menu,
                    ended_by="agent",
                    end_reason="ivr_no_navigate",
                    hold_seconds=capped,
                )
            menu += [  # as the voice agent does: the key for a person, then the tool saying one answered
                _tool_call("send_dtmf", {"digits": "1"}, "pressed 1"),
                TranscriptEntry(role="user", content="Sales, how can I help?"),
                _tool_call("human_reached", {}, "Noted: a person is on the line. Start the conversation."),
            ]
        if kind == "ios-screening-filter":
            screening = (
                "Hi, if you record your name and reason for calling, I'll see if this person is available."
            )
            return ConverseResult(
                result="ios-screening-filter",
                transcript=[TranscriptEntry(role="user", content=screening)],
                ended_by="agent",  # no end_reason: the client has no word for a screening assistant
                hold_seconds=capped,
            )
        transcript = menu + _human_conversation(assistant, variables, intent or "interested")
        if capped < hold:  # the call is cut at the assistant's limit, as the voice agent does
            message = assistant.max_duration_end_message
            transcript[-1:] = (
                [TranscriptEntry(role="assistant", content=interpolate(message, variables))]
                if message
                else []
            )
            return ConverseResult(
                result="human",
                transcript=transcript,
                ended_by="system",
                end_reason="max_duration",
                hold_seconds=capped,
            )
        if intent == "transfer" and assistant.transfer_phone_number:  # as the agent's transfer_to_human
            return ConverseResult(
                result="human",
                transcript=transcript,
                ended_by="agent",
                end_reason="transfer",
                hold_seconds=hold,
            )
        return ConverseResult(
            result="human",
            transcript=transcript,
            ended_by="agent",
            end_reason="tool_end_call",
            hold_seconds=hold,
        )


_MENU = "Welcome. For sales, press 1. For support, press 2. To repeat this menu, press 9."


def _tool_call(name: str, arguments: dict[str, str], output: str) -> TranscriptEntry:
    return TranscriptEntry(
        role="tool", content=name, tool_name=name, tool_arguments=arguments, tool_output=output
    )


def _human_conversation(
    assistant: CallAssistant, variables: dict[str, str], intent: str
) -> list[TranscriptEntry]:
    """A few turns: the first sentence, the pitch, the callee's answer, details asked for, goodbye."""
    opening = interpolate(assistant.first_sentence or "Hello, do you have a minute?", variables)
    pitch = interpolate(assistant.prompt, variables).strip().splitlines()[0][:200] if assistant.prompt else ""
    turns = []
    if assistant.first_sentence_mode == "none":
        turns.append(TranscriptEntry(role="user", content="Hello?"))
    turns += [
        TranscriptEntry(role="assistant", content=opening),
        TranscriptEntry(role="user", content="Yes, speaking."),
        TranscriptEntry(
            role="assistant",
            content=f"I'm calling about this: {pitch}" if pitch else "I'm calling you today about our offer.",
        ),
        TranscriptEntry(role="user", content=HUMAN_INTENTS[intent]),
    ]
    if assistant.structured_output_config and intent in ("interested", "completed"):
        details = "; ".join(
            f"{field.name}: {_sample_value(field.type, field.enum_options, variables.get(field.name))}"
            for field in assistant.structured_output_config
        )
        turns += [
            TranscriptEntry(role="assistant", content="Could I confirm a few details with you?"),
            TranscriptEntry(role="user", content=details),
        ]
    if intent == "transfer":  # the agent transfers; with no number to transfer to, nobody is available
        number = assistant.transfer_phone_number
        if number:
            labels = (d.label for d in assistant.transfer_destinations if d.phone_number == number)
            whom = next(labels, "a colleague")
            return [
                *turns,
                TranscriptEntry(role="assistant", content=f"Of course, I'm transferring you to {whom}."),
            ]
        turns.append(TranscriptEntry(role="assistant", content="I'm sorry, nobody is available right now."))
    goodbye = interpolate(assistant.end_of_call_sentence or "Thank you for your time, goodbye.", variables)
    turns.append(TranscriptEntry(role="assistant", content=goodbye))
    return turns


def _sample_value(kind: str, options: list[str] | None, given: str | None) -> str:
    """What the simulated callee says for a field: the prompt variable of its name when it has one (an
    enum's only when it is an option), else a sample of the field's type."""
    if given and (kind != "enum" or given in (options or [])):
        return given
    return {
        "number": "42",
        "boolean": "yes",
        "enum": (options or ["unknown"])[0],
        "date": "2026-12-01",
        "datetime": "2026-12-01T10:00:00Z",
    }.get(kind, "Alex Martin")


_OUTCOME_RULES: tuple[tuple[str, str], ...] = (
    ("do not contact", "do_not_contact"),
    ("not interested", "not_interested"),
    ("other number", "requested_callback_new_number"),
    ("call me back", "requested_callback_later"),
    ("all sorted", "completed"),
    ("interested", "interested"),
)


class SimulatedAnalyzer:
    """Deterministic, rule-based analysis of a transcript; it says so in every outcome_summary."""

    name = "simulated"

    async def analyze(self, request: AnalyzeRequest) -> AnalysisResult:
        said = [entry.content for entry in request.transcript if entry.role == "user"]
        if not said:
            return AnalysisResult()
        heard = " ".join(said).lower()
        outcome = next((o for phrase, o in _OUTCOME_RULES if phrase in heard), None)
        quote = next((s for s in said if any(p in s.lower() for p, _ in _OUTCOME_RULES)), said[-1])
        summary = f"[simulated analyzer] Rule-based outcome from the callee's words: \u201c{quote}\u201d"
        fields = request.assistant.structured_output_config or []
        structured = None
        if fields:  # held to the config as a model's reply is (activities/analysis.py)
            names = [f.name for f in fields]
            structured = validate_output(fields, {f.name: _extracted(f, said, names) for f in fields})
        return AnalysisResult(structured_output=structured, outcome=outcome, outcome_summary=summary)  # type: ignore[arg-type]


def _extracted(field: FieldLike, said: list[str], names: list[str]) -> object:
    """The field's value from the callee's last `name: value` for it (up to the next field's `; name:`:
    a value may hold a semicolon), of the field's type; a required field the callee did not give a value
    of that type gets a sample one, as a model must give one."""
    following = "|".join(re.escape(name) for name in names)
    boundary = re.compile(rf";(?=\s*(?:{following})\s*:)")  # split, not matched: linear in any value
    named = re.compile(rf"\s*{re.escape(field.name)}\s*:")
    heard = [
        piece[found.end() :].strip()
        for line in said
        for piece in boundary.split(line)
        if (found := named.match(piece))
    ]
    candidates = heard[-1:] + (
        [_sample_value(field.type, field.enum_options, None)] if field.required else []
    )
    for candidate in candidates:
        value = _coerce(field, candidate)
        if value is not None and field_problem(field, value) is None:
            return value
    return None


def _coerce(field: FieldLike, value: str) -> object:
    if field.type == "number":
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and "." not in value else number
    if field.type == "boolean":
        return value.lower() in ("yes", "true", "1")
    if field.type == "enum":  # the option the callee named, whatever its case
        return next((o for o in field.enum_options or [] if o.casefold() == value.casefold()), None)
    return value

"""The conversation: an `Agent` configured entirely by the seed's assistant fields.

Independent of rooms and of Temporal, so livekit-agents' text-mode sessions test it as it runs in a
call: `OutdialAgent(spec, deps)` is what the LiveKit job starts, `CallState` is how the call ends and
what it was (human, voicemail, IVR, screening), `transcript_from` turns the session's history into the
seed's transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import httpx
from livekit.agents import AMD, Agent, RunContext, StopResponse, ToolError, function_tool, llm
from livekit.agents.voice import SpeechHandle

from activities.sms import SmsMessage, SmsProvider
from agent.calendly import CalendlyClient
from agent.config import AgentConfig, CallSpec
from agent.control import CallControl, TransferFailed
from agent.http_tools import CustomHttpTool
from agent.pipeline import is_realtime
from agent.prompt import build_instructions, interpolate
from models.call import TranscriptEntry
from models.common import AttemptResult, EndedBy, EndReason
from models.workflow_io import ConverseResult

log = logging.getLogger(__name__)

# Without an end_of_call_sentence (the seed's is optional), the agent says a goodbye of its own, in the
# conversation's language: a fixed English one spoke English to every callee.
GOODBYE_INSTRUCTIONS = (
    "The call ends now: say a short, polite goodbye in the language of the conversation, and nothing else."
)
Detection = Literal["human", "voicemail", "ivr", "screening", "uncertain"]
# Apple's Call Screening (and similar assistants) ask the caller to say who they are and why.
_SCREENING = re.compile(
    r"record your name|reason for (your )?call|(see|check) if (this person|they|he|she) (is|are) available"
    r"|screening",
    re.I,
)
_DTMF = re.compile(r"^[0-9*#]{1,32}$")


def looks_like_screening(text: str) -> bool:
    return bool(_SCREENING.search(text))


# What phone menus say, in the languages of the voice catalog.
_MENU = re.compile(
    r"\b(press|dial|option|menu|extension|pound|hash key|appuyez|tapez|touche|pulse|marque|oprima"
    r"|drücken|wählen|taste|premere|digitare|digite|pressione|нажмите)\b",
    re.I,
)


def reached_through_menu(transcript: Sequence[TranscriptEntry]) -> bool:
    """A person the menu put through (the LLM may not say so with `human_reached`): after the last key
    pressed the callee answered the agent, in words no menu says. A conversation recorded as `IVR` had
    no analysis, and the order called the person again."""
    keys = [i for i, entry in enumerate(transcript) if entry.tool_name == "send_dtmf"]
    after = transcript[keys[-1] + 1 :] if keys else []
    spoke = [i for i, entry in enumerate(after) if entry.role == "assistant"]
    replies = [e for e in after[spoke[0] + 1 :] if e.role == "user"] if spoke else []
    heard = [e for e in after if e.role == "user"]
    return bool(replies) and not any(_MENU.search(e.content) for e in heard)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CallState:
    """How the call is going and how it ended; the first `end` wins. The times are the call's own:
    when the SIP leg became active, when the call ended."""

    detection: Detection | None = None
    human_reached: bool = False
    ended_by: EndedBy | None = None
    end_reason: EndReason | None = None
    hang_up: bool = True
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], datetime] = _utc_now

    def mark_answered(self) -> None:
        """The callee picked up (`sip.callStatus` became `active`): the agent may speak."""
        if not self.answered.is_set():
            self.answered_at = self.clock()
            self.answered.set()

    def end(self, ended_by: EndedBy, reason: EndReason | None, *, hang_up: bool = True) -> None:
        if self.ended.is_set():
            return
        self.ended_by, self.end_reason, self.hang_up = ended_by, reason, hang_up
        self.ended_at = self.clock()
        self.ended.set()

    def result(self, transcript: Sequence[TranscriptEntry]) -> AttemptResult:
        """The attempt's result: what answering-machine detection said, corrected by what happened."""
        said = [t.content for t in transcript if t.role == "user"]
        if self.human_reached or self.detection == "human":
            return "human"
        if self.detection == "voicemail":
            return "voicemail"
        if self.detection == "ivr":
            return "human" if reached_through_menu(transcript) else "IVR"
        if self.detection == "screening":
            # The screened person may pick up after the agent stated its reason.
            return "human" if any(not looks_like_screening(s) for s in said[1:]) else "ios-screening-filter"
        return "human" if said else "unknown"

    def converse_result(self, transcript: list[TranscriptEntry]) -> ConverseResult:
        return ConverseResult(
            result=self.result(transcript),
            transcript=transcript,
            ended_by=self.ended_by or "user",
            end_reason=self.end_reason,  # None where none fits: the session failed
            answered_at=self.answered_at,
            ended_at=self.ended_at,
        )


def transcript_from(items: Sequence[llm.ChatItem]) -> list[TranscriptEntry]:
    """The seed's transcript: user/assistant messages, and one `tool` entry per tool call."""
    entries: list[TranscriptEntry] = []
    calls: dict[str, TranscriptEntry] = {}
    for item in items:
        if item.type == "message" and item.role in ("user", "assistant"):
            text = item.text_content
            if text:
                entries.append(TranscriptEntry(role=item.role, content=text))
        elif item.type == "function_call":
            try:
                arguments: Any = json.loads(item.arguments or "{}")
            except json.JSONDecodeError:
                arguments = item.arguments
            entry = TranscriptEntry(
                role="tool", content=item.name, tool_name=item.name, tool_arguments=arguments
            )
            calls[item.call_id] = entry
            entries.append(entry)
        elif item.type == "function_call_output":
            entry = calls.get(item.call_id)
            if entry is None:
                entry = TranscriptEntry(role="tool", content=item.name, tool_name=item.name)
                entries.append(entry)
            entry.tool_output = item.output
            entry.tool_is_error = item.is_error
            entry.content = item.output or item.name
    return entries


@dataclass
class CallDeps:
    """What the agent reaches outside the conversation."""

    control: CallControl
    config: AgentConfig = field(default_factory=AgentConfig)
    http: httpx.AsyncClient | None = None  # guarded client for custom tools (activities/url_guard.py)
    sms: SmsProvider | None = None
    sms_from_phone_number: str | None = None
    calendly_http: httpx.AsyncClient | None = None
    now: Callable[[], datetime] = field(default_factory=lambda: lambda: datetime.now(UTC))


class OutdialAgent(Agent):
    """One attempt's agent: prompt, first sentence, and the tools its assistant enables."""

    def __init__(self, spec: CallSpec, deps: CallDeps, state: CallState | None = None) -> None:
        self.spec = spec
        self.deps = deps
        self.state = state or CallState()
        self.variables = spec.variables()
        self._sms_count = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self.opened = asyncio.Event()  # on_enter is over: the first sentence said, or not to be said
        assistant = spec.assistant
        super().__init__(
            instructions=build_instructions(
                assistant,
                self.variables,
                to_phone_number=spec.to_phone_number,
                now=deps.now(),
                timezone=spec.timezone,
            ),
            tools=self._tools(),
        )
        self._calendly = self._calendly_client()
        log.debug("agent for attempt %s with tools %s", spec.attempt_id, [t.id for t in self.tools])

    # -- configuration -------------------------------------------------------------------------------

    def _tools(self) -> list[llm.Tool]:
        a = self.spec.assistant
        tools: list[llm.Tool] = [
            function_tool(
                self._end_call, name="end_call", description="End the call once the conversation is over."
            )
        ]
        if a.transfer_phone_number:
            several = len(a.transfer_destinations) > 1  # then the LLM names one, by the prompt's rules
            tools.append(
                function_tool(
                    self._transfer_to_destination if several else self._transfer_to_human,
                    name="transfer_to_human",
                    description="Transfer the person to a human colleague.",
                )
            )
        if a.ivr_navigation_enabled:
            tools += [
                function_tool(
                    self._send_dtmf, name="send_dtmf", description="Press keys on an automated phone menu."
                ),
                function_tool(
                    self._skip_turn,
                    name="skip_turn",
                    description="Stay silent: the phone menu is still talking.",
                ),
                function_tool(
                    self._human_reached,
                    name="human_reached",
                    description="A live person is now on the line (after a phone menu or call screening).",
                ),
            ]
        if a.sms_enabled:
            if a.sms_template:
                tools.append(
                    function_tool(
                        self._send_template_sms,
                        name="send_sms",
                        description="Text the person the prepared message (its content is fixed).",
                    )
                )
            else:
                tools.append(
                    function_tool(
                        self._send_sms, name="send_sms", description="Text the person a short message."
                    )
                )
        if a.calendly:
            tools += [
                function_tool(
                    self._check_availability,
                    name="check_availability",
                    description="Free meeting start times between two dates.",
                ),
                function_tool(
                    self._book_meeting, name="book_meeting", description="Book a meeting at a free time."
                ),
            ]
        if a.custom_tools:
            if self.deps.http is None:
                raise RuntimeError("custom tools need an HTTP client")
            tools += [
                CustomHttpTool(
                    t, self.variables, self.deps.http, timeout=self.deps.config.http_timeout_secs
                ).tool()
                for t in a.custom_tools
            ]
        return tools

    def _calendly_client(self) -> CalendlyClient | None:
        calendly = self.spec.assistant.calendly
        if not calendly:
            return None
        token = self.deps.config.calendly_token(self.spec.assistant.organization_id, calendly.connection_id)
        if not token or self.deps.calendly_http is None:
            log.warning(
                "calendly connection %s has no token: booking tools will fail", calendly.connection_id
            )
            return None
        return CalendlyClient(
            self.deps.calendly_http,
            base_url=self.deps.config.calendly_api_url,
            token=token,
            event_type=calendly.event_type_id,
        )

    # -- the call's life ----------------------------------------------------------------------------

    async def on_enter(self) -> None:
        """Once the callee picks up (the session starts while it rings, so answering-machine detection
        hears the greeting from its first word): arm the duration limit, then the first sentence."""
        try:
            await self._open()
        finally:
            self.opened.set()

    async def _open(self) -> None:
        await self.state.answered.wait()
        self._arm_max_duration()
        a = self.spec.assistant
        if a.first_sentence_mode == "none":
            return
        if a.first_sentence_delay_ms:
            await asyncio.sleep(a.first_sentence_delay_ms / 1000)
        if self.state.ended.is_set() or self.state.detection not in (None, "human", "uncertain"):
            return  # a machine answered (its greeting was quick): no first sentence for it
        if any(
            item.type == "message" and item.role in ("user", "assistant")
            for item in self.session.history.items
        ):
            return  # the callee spoke during the delay and was answered: the conversation is under way
        sentence = interpolate(a.first_sentence, self.variables) if a.first_sentence else None
        if a.first_sentence_mode == "static" and sentence:
            self._say(sentence)
        elif sentence:
            self.session.generate_reply(
                instructions=f"Open the call. Say this, in your own words and briefly: {sentence}"
            )
        else:
            self.session.generate_reply(instructions="Open the call: greet the person and say why you call.")

    def _arm_max_duration(self) -> None:
        limit = float(self.spec.assistant.max_call_duration_secs or 0)
        if limit <= 0:
            return
        # A goodbye to say starts early enough to fit; without one the call runs its whole limit (seed:
        # "If not set, the call ends silently"), not cut at 80 % of it.
        farewell = self.spec.assistant.max_duration_end_message
        buffer = min(self.deps.config.farewell_buffer_secs, limit * 0.2) if farewell else 0.0
        self._timer = asyncio.get_running_loop().call_later(limit - buffer, self._max_duration_reached)

    def _max_duration_reached(self) -> None:
        message = self.spec.assistant.max_duration_end_message
        with contextlib.suppress(RuntimeError):
            self.session.interrupt(force=True)
        self.say_then_end(interpolate(message, self.variables) if message else None, "system", "max_duration")

    def say_then_end(
        self, text: str | None, ended_by: EndedBy, reason: EndReason, *, hang_up: bool = True
    ) -> SpeechHandle | None:
        """Say `text` without allowing interruptions, then end the call (at once when there is none)."""
        if self.state.ended.is_set():
            return None
        if not text:
            self.state.end(ended_by, reason, hang_up=hang_up)
            return None
        handle = self._say(text, allow_interruptions=False)
        handle.add_done_callback(lambda _: self.state.end(ended_by, reason, hang_up=hang_up))
        return handle

    def _say(self, text: str, *, allow_interruptions: bool = True) -> SpeechHandle:
        """Speak `text` word for word: through the voice; a realtime model has none (on a call, `say`
        raises: no TTS), so it is told to say it, and speaks it itself."""
        if is_realtime(self.spec.assistant):
            return self.session.generate_reply(
                instructions=f"Say exactly this, word for word, and nothing else: {text}",
                allow_interruptions=allow_interruptions,
            )
        return self.session.say(text, allow_interruptions=allow_interruptions)

    def goodbye_then_end(self, ended_by: EndedBy, reason: EndReason) -> SpeechHandle | None:
        """The end-of-call sentence word for word, then hang up; without one, a goodbye the LLM says in
        the conversation's own language."""
        sentence = self.spec.assistant.end_of_call_sentence
        if sentence or self.state.ended.is_set():
            return self.say_then_end(interpolate(sentence or "", self.variables), ended_by, reason)
        handle = self.session.generate_reply(  # words only: no tool (a transfer, a request) on the way out
            instructions=GOODBYE_INSTRUCTIONS, tool_choice="none", allow_interruptions=False
        )
        handle.add_done_callback(lambda _: self.state.end(ended_by, reason))
        return handle

    async def cancel(self) -> None:
        """The order was cancelled: say goodbye and hang up."""
        self.goodbye_then_end("system", "participant_removed")

    async def listen_for_answering_machine(self, amd: AMD) -> None:
        """Wait for livekit-agents' AMD verdict on the greeting, then act on it."""
        verdict = await amd.execute()
        log.info("attempt %s: AMD %s (%s)", self.spec.attempt_id, verdict.category.value, verdict.reason)
        self.on_answering_machine(verdict.category.value, verdict.transcript)

    def on_answering_machine(self, category: str, transcript: str = "") -> SpeechHandle | None:
        """Act on livekit-agents' AMD verdict (human / machine-vm / machine-unavailable / machine-ivr /
        uncertain): leave the voicemail message or hang up silently, navigate an IVR or hang up, answer
        a call-screening assistant. Returns the speech it started, if any."""
        a = self.spec.assistant
        if category == "human":
            self.state.detection = "human"
        elif category == "machine-vm":
            self.state.detection = "voicemail"
            message = interpolate(a.voicemail_message, self.variables) if a.voicemail_message else None
            return self.say_then_end(message, "agent", "voicemail")
        elif category == "machine-unavailable":
            self.state.detection = "voicemail"
            self.state.end("agent", "voicemail")  # no mailbox to leave a message in
        elif category == "machine-ivr" and looks_like_screening(transcript):
            self.state.detection = "screening"
            return self.session.generate_reply(
                instructions="A call-screening assistant answered. In one short sentence, say who you are "
                "and why you are calling, then wait for the person."
            )
        elif category == "machine-ivr":
            self.state.detection = "ivr"
            if a.ivr_navigation_enabled:
                return self.session.generate_reply(
                    instructions="An automated phone menu answered. Navigate it towards a person."
                )
            else:
                self.state.end("agent", "ivr_no_navigate")
        else:
            self.state.detection = "uncertain"
        return None

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()

    # -- tools --------------------------------------------------------------------------------------

    async def _end_call(self, context: RunContext) -> None:
        """End the call: say goodbye, then hang up."""
        self.goodbye_then_end("agent", "tool_end_call")
        raise StopResponse()

    async def _transfer_to_human(self, context: RunContext, reason: str) -> None:
        """Transfer to a human colleague.

        Args:
            reason: Why the person needs a human, in one sentence (a warm transfer's colleague hears it).
        """
        number = self.spec.assistant.transfer_phone_number
        assert number is not None
        await self._transfer(number, reason)

    async def _transfer_to_destination(self, context: RunContext, reason: str, destination: str) -> None:
        """Transfer to the human colleagues at one of the transfer destinations.

        Args:
            reason: Why the person needs a human, in one sentence (a warm transfer's colleague hears it).
            destination: The label of the destination the rules call for, as the instructions list them.
        """
        destinations = self.spec.assistant.transfer_destinations
        wanted = destination.strip().casefold()
        chosen = next((d for d in destinations if d.key == wanted), None)
        if chosen is None:
            labels = ", ".join(d.label for d in destinations)
            raise ToolError(f"Unknown destination {destination!r}: choose one of {labels}.")
        await self._transfer(chosen.phone_number, reason)

    async def _transfer(self, number: str, reason: str) -> None:
        """Cold (SIP REFER) or warm (the AI briefs the human, with the reason the LLM gave, then bridges);
        a failure: back to the callee."""
        a = self.spec.assistant
        try:
            if a.human_transfer_mode == "warm":
                asked = (
                    interpolate(a.warm_transfer_summary_instructions, self.variables)
                    if a.warm_transfer_summary_instructions
                    else ""
                )
                why = f"Why the caller needs a colleague: {reason.strip()}" if reason.strip() else ""
                await self.deps.control.transfer_warm(
                    number,
                    summary_instructions="\n".join(filter(None, [asked, why])) or None,
                    chat_ctx=self.chat_ctx,
                )
            else:
                await self.deps.control.transfer_cold(number)
        except TransferFailed as err:
            raise ToolError(
                f"The transfer failed ({err}). Tell the person nobody is available right now and continue."
            ) from None
        self.state.human_reached = True
        mode = a.human_transfer_mode or "cold"
        # After a warm transfer the callee and the colleague share the room: leave it, don't close it.
        self.state.end("agent", "transfer", hang_up=mode == "cold")
        raise StopResponse()

    async def _send_dtmf(self, context: RunContext, digits: str) -> str:
        """Press keys on the phone menu.

        Args:
            digits: The keys to press, in order: digits 0-9, * and #.
        """
        if not _DTMF.match(digits):
            raise ToolError("digits may only contain 0-9, * and #")
        await self.deps.control.send_dtmf(digits)
        return f"pressed {digits}"

    async def _skip_turn(self, context: RunContext) -> None:
        """Say nothing this turn."""
        raise StopResponse()

    async def _human_reached(self, context: RunContext) -> str:
        """A live person answered."""
        self.state.human_reached = True
        return "Noted: a person is on the line. Start the conversation."

    async def _send_sms(self, context: RunContext, message: str) -> str:
        """Text the person on this call.

        Args:
            message: The text to send (under 300 characters).
        """
        return await self._deliver_sms(message)

    async def _send_template_sms(self, context: RunContext) -> str:
        """Text the person the prepared message."""
        template = self.spec.assistant.sms_template or ""
        return await self._deliver_sms(interpolate(template, self.variables))

    async def _deliver_sms(self, body: str) -> str:
        if self.deps.sms is None:
            raise ToolError("text messages are not available on this line")
        message = SmsMessage(
            to=self.spec.to_phone_number,
            **{"from": self.deps.sms_from_phone_number or self.spec.from_phone_number},
            body=body,
            idempotency_key=f"{self.spec.attempt_id}:sms:{next(self._sms_count)}",
        )
        try:
            receipt = await self.deps.sms.send(message)
        except Exception as err:  # the provider's refusal is the LLM's to explain
            raise ToolError(f"the text could not be sent: {err}") from None
        return f"Text sent ({receipt.status})."

    async def _check_availability(self, context: RunContext, start_date: str, end_date: str) -> str:
        """Free start times for a meeting.

        Args:
            start_date: First day to look at, YYYY-MM-DD.
            end_date: Last day to look at, YYYY-MM-DD (at most a week after start_date).
        """
        client = self._require_calendly()
        try:
            first, last = date.fromisoformat(start_date), date.fromisoformat(end_date)
        except ValueError:
            raise ToolError("dates must be YYYY-MM-DD") from None
        slots = await client.available_times(first, last, timezone=self._timezone(), now=self.deps.now())
        return json.dumps({"timezone": self._timezone(), "available_start_times": slots})

    async def _book_meeting(self, context: RunContext, start_time: str, name: str, email: str) -> str:
        """Book the meeting.

        Args:
            start_time: One of the free start times, ISO 8601 with its offset.
            name: The person's full name.
            email: The person's email address (spell it back to them first).
        """
        client = self._require_calendly()
        booked = await client.book(
            start_time=start_time,
            name=name,
            email=email,
            timezone=self._timezone(),
            phone_number=self.spec.to_phone_number,
        )
        return json.dumps({"booked": True, **booked})

    def _require_calendly(self) -> CalendlyClient:
        if self._calendly is None:
            raise ToolError("the calendar is not reachable right now; offer to follow up by email")
        return self._calendly

    def _timezone(self) -> str:
        if self.spec.timezone:
            return self.spec.timezone
        from workflows.schedule import resolve_timezones

        return resolve_timezones(self.spec.to_phone_number, None)[0]

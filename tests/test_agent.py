"""The voice agent in livekit-agents' text-mode sessions, against a local OpenAI-compatible server.

`FakeOpenAI` streams scripted chat completions (text, or tool calls) and records every request, so a
test drives the LLM's decisions and checks what the agent sent it. Tools reach local servers only: a
custom-tool endpoint, a Calendly look-alike, the FakeLiveKit Twirp server (cold transfer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from livekit import api, rtc
from livekit.agents import AgentSession, ToolError, llm
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import http_context, is_given
from livekit.agents.voice.amd.classifier import AMD_PROMPT
from livekit.plugins import cartesia, openai
from temporalio.testing import WorkflowEnvironment

from activities.livekit import room_name
from activities.simulated import SimulatedTelephony
from activities.sms import SimulatedSmsOutbox, TwilioSms
from activities.url_guard import guarded_client
from agent.call_agent import (
    GOODBYE_INSTRUCTIONS,
    CallDeps,
    CallState,
    OutdialAgent,
    reached_through_menu,
    transcript_from,
)
from agent.config import AgentConfig, CallSpec
from agent.control import LiveKitCallControl, TransferFailed
from agent.entrypoint import build_amd, hold_the_call
from agent.http_tools import CustomHttpTool, parameters_schema, render_body, render_url, with_params
from agent.pipeline import build_llm, build_session, build_stt, build_tts, sound_options
from agent.prompt import interpolate
from agent.reporter import ConverseLink
from models.assistant import Assistant, CustomToolRecord, FieldSpecRecord, KeyValueRecord, call_assistant_from
from models.call import TranscriptEntry
from models.settings import Settings
from models.workflow_io import ConverseRequest, ConverseResult
from tests import http_fakes
from tests.helpers import eventually
from tests.test_livekit_dial import (
    API_KEY,
    API_SECRET,
    FakeLiveKit,
    _twirp_error,
    dispatched_attempt,
    livekit_settings,
    running_livekit,
    start_livekit_order,
)
from tests.test_notify import FakeTwilio
from workers import create_worker

TO = "+33612345678"
FROM = "+33159000000"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
VARIABLES = {"name": "Ada", "product": "solar panels"}


# -- a scripted OpenAI-compatible server ---------------------------------------------------------------


@dataclass
class FakeOpenAI:
    """Answers /v1/chat/completions from `script` (one reply per request), streaming SSE chunks."""

    script: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def say(self, text: str) -> None:
        self.script.append({"text": text})

    def call(self, tool: str, /, **arguments: Any) -> None:
        self.script.append({"tool": tool, "arguments": arguments})

    def fail(self, status: int) -> None:
        """From now on every request is refused with `status` (a revoked key: 401), as OpenAI does."""
        self.script.append({"status": status})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self.script[0] if self.script and "status" in self.script[0] else None
        if reply is not None:
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=reply["status"])
        reply = self.script.pop(0) if self.script else {"text": "Alright."}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if "tool" in reply:
            call = {
                "index": 0,
                "id": f"call_{len(self.requests)}",
                "type": "function",
                "function": {"name": reply["tool"], "arguments": json.dumps(reply["arguments"])},
            }
            await send({"role": "assistant", "tool_calls": [call]})
            await send({}, "tool_calls")
        else:
            await send({"role": "assistant", "content": reply["text"]})
            await send({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        return response

    def system_prompt(self, index: int = 0) -> str:
        return next(
            m["content"] for m in self.requests[index]["messages"] if m["role"] in ("system", "developer")
        )

    def tool_names(self, index: int = -1) -> set[str]:
        return {t["function"]["name"] for t in self.requests[index].get("tools", [])}


@contextlib.asynccontextmanager
async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async with serve(
        [web.post("/v1/chat/completions", fake.completions), web.get("/v1/models", models)]
    ) as url:
        fake.url = url
        yield fake


# -- a call under test ---------------------------------------------------------------------------------


@dataclass
class RecordingControl:
    """The phone line, recorded: hang-ups, transfers, DTMF."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    fail_transfer: str | None = None

    async def hang_up(self) -> None:
        self.events.append(("hang_up",))

    async def transfer_cold(self, to_phone_number: str) -> None:
        self.events.append(("cold", to_phone_number))
        if self.fail_transfer:
            raise TransferFailed(self.fail_transfer)

    async def transfer_warm(
        self, to_phone_number: str, *, summary_instructions: str | None, chat_ctx: Any
    ) -> None:
        self.events.append(
            ("warm", to_phone_number, summary_instructions, [m.text_content for m in chat_ctx.messages()])
        )
        if self.fail_transfer:
            raise TransferFailed(self.fail_transfer)

    async def send_dtmf(self, digits: str) -> None:
        self.events.append(("dtmf", digits))


def make_spec(**fields: Any) -> CallSpec:
    fields.setdefault("prompt", "You call {{name}} about {{product}}.")
    assistant = call_assistant_from(Assistant.model_validate(fields), id="a1", organization_id="org", now=NOW)
    return CallSpec(
        call_id="c1",
        attempt_id="att-1",
        assistant=assistant,
        prompt_variables=VARIABLES,
        to_phone_number=TO,
        from_phone_number=FROM,
        timezone="Europe/Paris",
    )


@dataclass
class Call:
    session: AgentSession
    agent: OutdialAgent
    state: CallState
    start: Any  # the RunResult of session start (on_enter)

    def transcript(self) -> list[Any]:
        return transcript_from(self.session.history.items)

    async def ended(self, timeout: float = 10) -> CallState:
        async with asyncio.timeout(timeout):
            await self.state.ended.wait()
        return self.state


@contextlib.asynccontextmanager
async def call(fake: FakeOpenAI, spec: CallSpec, deps: CallDeps | None = None) -> AsyncIterator[Call]:
    """A text-only AgentSession (no STT/TTS/VAD) running the agent, as a LiveKit job would."""
    deps = deps or CallDeps(control=RecordingControl(), now=lambda: NOW)
    async with (
        openai.LLM(model="fake-model", base_url=f"{fake.url}/v1", api_key="sk-test") as model,
        AgentSession(llm=model) as session,
    ):
        state = CallState()
        state.mark_answered()  # as the job does when the SIP leg becomes active
        agent = OutdialAgent(spec, deps, state)
        try:
            started = await session.start(agent, capture_run=True)
            yield Call(session, agent, state, started)
        finally:
            agent.close()


def assistant_messages(events: Any) -> list[str]:
    return [e.item.text_content for e in events if e.type == "message" and e.item.role == "assistant"]


# -- prompt and first sentence -------------------------------------------------------------------------


async def test_static_first_sentence_is_said_verbatim_with_variables(fake_llm: FakeOpenAI) -> None:
    spec = make_spec(first_sentence="Hello {{name}}, it's about {{product}}.", first_sentence_mode="static")
    async with call(fake_llm, spec) as c:
        assert assistant_messages(c.start.events) == ["Hello Ada, it's about solar panels."]
        assert fake_llm.requests == []  # static: the LLM is not asked


async def test_generated_first_sentence_asks_the_llm_with_the_instruction(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hi Ada! Do you have a minute to talk about solar panels?")
    spec = make_spec(first_sentence="Greet {{name}} and mention {{product}}", first_sentence_mode="generated")
    async with call(fake_llm, spec) as c:
        assert assistant_messages(c.start.events) == [
            "Hi Ada! Do you have a minute to talk about solar panels?"
        ]
    sent = json.dumps(fake_llm.requests[0]["messages"])
    assert "Greet Ada and mention solar panels" in sent


async def test_no_first_sentence_waits_for_the_callee(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hello Ada, I'm calling about solar panels.")
    spec = make_spec(first_sentence="Hello", first_sentence_mode="none")
    async with call(fake_llm, spec) as c:
        assert assistant_messages(c.start.events) == []
        assert fake_llm.requests == []
        run = await c.session.run(user_input="Hello?")
        run.expect.next_event().is_message(role="assistant")


async def test_first_sentence_delay_is_honoured(fake_llm: FakeOpenAI) -> None:
    spec = make_spec(first_sentence="Hello there.", first_sentence_mode="static", first_sentence_delay_ms=300)
    began = time.time()
    async with call(fake_llm, spec) as c:
        said = next(e.item for e in c.start.events if e.type == "message")
        assert said.created_at - began >= 0.3


@pytest.mark.parametrize("mode", ["static", "generated"])
async def test_a_callee_who_spoke_during_the_delay_gets_no_second_opening(
    fake_llm: FakeOpenAI, mode: str
) -> None:
    """The first sentence opens a call: once the callee has spoken (and been answered) during its delay,
    it is not said on top, a second introduction."""
    fake_llm.say("Hi! This is Sam from Sunny Energy, calling about solar panels.")  # the answer
    spec = make_spec(first_sentence="Hello {{name}}.", first_sentence_mode=mode, first_sentence_delay_ms=500)
    async with contextlib.AsyncExitStack() as stack:
        model = await stack.enter_async_context(
            openai.LLM(model="fake-model", base_url=f"{fake_llm.url}/v1", api_key="sk-test")
        )
        session = await stack.enter_async_context(AgentSession(llm=model))
        state = CallState()
        state.mark_answered()
        agent = OutdialAgent(spec, CallDeps(control=RecordingControl(), now=lambda: NOW), state)
        stack.callback(agent.close)
        await session.start(agent)  # on_enter runs on: it waits out the delay
        await session.run(user_input="Hello? Who is this?")
        await asyncio.wait_for(agent.opened.wait(), timeout=10)
        said = [
            i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"
        ]
    assert said == ["Hi! This is Sam from Sunny Energy, calling about solar panels."]
    assert len(fake_llm.requests) == 1


async def test_prompt_variables_faq_and_tools_reach_the_llm(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hi.")
    spec = make_spec(
        faq_items=[{"question": "Price of {{product}}?", "answer": "From 99 euros."}],
        transfer_phone_number="+33612345679",
        ivr_navigation_enabled=True,
        sms_enabled=True,
    )
    async with call(fake_llm, spec):
        pass
    system = fake_llm.system_prompt()
    assert system.startswith("You call Ada about solar panels.")
    assert "Q: Price of solar panels?\nA: From 99 euros." in system
    assert "Tuesday 01 December 2026, 10:00" in system  # the callee's local time
    assert fake_llm.tool_names() == {
        "end_call",
        "transfer_to_human",
        "send_dtmf",
        "skip_turn",
        "human_reached",
        "send_sms",
    }


async def test_the_official_clients_transfer_destination_is_the_transfer_and_its_label_is_told(
    fake_llm: FakeOpenAI,
) -> None:
    fake_llm.say("Hi.")
    spec = make_spec(transfer_destinations=[{"label": "Sales", "phone_number": "+33612345679"}])
    async with call(fake_llm, spec):
        pass
    assert "transfer_to_human" in fake_llm.tool_names()
    assert "tell them you are transferring them to Sales" in fake_llm.system_prompt()


TWO_DESTINATIONS = [
    {"label": "Sales", "phone_number": "+33612345679"},
    {"label": "Support", "phone_number": "+33612345670"},
]


async def test_with_several_destinations_the_agent_transfers_to_the_one_it_names(
    fake_llm: FakeOpenAI,
) -> None:
    """The official client's routing: the prompt's rules refer to the labels, the LLM names one."""
    fake_llm.call("transfer_to_human", reason="a broken panel", destination="support")
    control = RecordingControl()
    spec = make_spec(
        prompt="Route questions about a broken panel to Support, prices to Sales.",
        first_sentence_mode="none",
        transfer_destinations=TWO_DESTINATIONS,
    )
    async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
        await c.session.run(user_input="My panel is broken, put me through to someone.")
        state = await c.ended()
    assert "among: Sales, Support" in fake_llm.system_prompt()
    assert control.events == [("cold", "+33612345670")]  # Support's number, not the first one
    assert (state.end_reason, state.hang_up) == ("transfer", True)


async def test_a_destination_that_is_not_listed_is_refused_and_the_call_goes_on(
    fake_llm: FakeOpenAI,
) -> None:
    fake_llm.call("transfer_to_human", reason="legal question", destination="Legal")
    fake_llm.say("Let me help you myself.")
    control = RecordingControl()
    spec = make_spec(first_sentence_mode="none", transfer_destinations=TWO_DESTINATIONS)
    async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
        run = await c.session.run(user_input="I need a lawyer.")
        run.expect.next_event().is_function_call(name="transfer_to_human")
        output = run.expect.next_event().is_function_call_output().event().item
        run.expect.next_event().is_message(role="assistant")
        assert not c.state.ended.is_set()
    assert output.is_error and "choose one of Sales, Support" in output.output
    assert control.events == []


async def test_only_enabled_tools_are_offered(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hi.")
    async with call(fake_llm, make_spec()):
        pass
    assert fake_llm.tool_names() == {"end_call"}


# -- ending the call -----------------------------------------------------------------------------------


async def test_end_call_says_the_end_of_call_sentence_then_hangs_up(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hello Ada.")
    fake_llm.call("end_call")
    spec = make_spec(end_of_call_sentence="Goodbye {{name}}, have a nice day.")
    async with call(fake_llm, spec) as c:
        run = await c.session.run(user_input="No thanks, bye.")
        run.expect.next_event().is_function_call(name="end_call")
        state = await c.ended()
        assert (state.ended_by, state.end_reason, state.hang_up) == ("agent", "tool_end_call", True)
        transcript = c.transcript()
    assert transcript[-1].role == "assistant" and transcript[-1].content == "Goodbye Ada, have a nice day."
    assert any(t.role == "tool" and t.tool_name == "end_call" for t in transcript)
    assert state.result(transcript) == "human"
    assert len(fake_llm.requests) == 2  # no LLM reply after end_call


async def test_cancelling_the_order_says_goodbye_and_ends(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("Hello Ada.")
    async with call(fake_llm, make_spec(end_of_call_sentence="Sorry {{name}}, I must go.")) as c:
        await c.agent.cancel()
        state = await c.ended()
        assert (state.ended_by, state.end_reason) == ("system", "participant_removed")
        assert c.transcript()[-1].content == "Sorry Ada, I must go."


async def test_without_an_end_of_call_sentence_the_agent_says_goodbye_in_the_calls_language(
    fake_llm: FakeOpenAI,
) -> None:
    """The seed's end_of_call_sentence is optional: without one, a fixed English goodbye ended every call,
    a French one too. The LLM now says a goodbye of its own, when it ends the call and when the order
    is cancelled."""
    fake_llm.say("Bonjour Ada, je vous appelle au sujet des panneaux solaires.")
    fake_llm.call("end_call")
    fake_llm.say("Au revoir Ada, bonne journée !")
    async with call(fake_llm, make_spec(prompt="Tu appelles {{name}} en français.")) as c:
        await c.session.run(user_input="Non merci, au revoir.")
        state = await c.ended()
        assert (state.ended_by, state.end_reason) == ("agent", "tool_end_call")
        assert c.transcript()[-1].content == "Au revoir Ada, bonne journée !"
    assert GOODBYE_INSTRUCTIONS in json.dumps(fake_llm.requests[-1], ensure_ascii=False)
    fake_llm.say("Bonjour Ada.")
    fake_llm.say("Je dois vous laisser, au revoir !")
    async with call(fake_llm, make_spec(prompt="Tu appelles {{name}} en français.")) as c:
        await c.agent.cancel()
        state = await c.ended()
        assert (state.ended_by, state.end_reason) == ("system", "participant_removed")
        assert c.transcript()[-1].content == "Je dois vous laisser, au revoir !"
    assert fake_llm.requests[-1]["tool_choice"] == "none"  # words only: no transfer on the way out


REALTIME = {"type": "realtime", "provider": "openai", "realtime_model_id": "gpt-realtime"}


async def test_a_realtime_model_is_told_what_to_say_having_no_voice_to_say_it(fake_llm: FakeOpenAI) -> None:
    """On a call, `say` needs a TTS, which a realtime model has not ("trying to generate speech from text
    without a TTS model"): its goodbye, and so its hang-up, failed. It is told the words instead."""
    fake_llm.say("Sorry Ada, I must go.")
    spec = make_spec(
        llm_model=REALTIME, first_sentence_mode="none", end_of_call_sentence="Sorry {{name}}, I must go."
    )
    async with call(fake_llm, spec) as c:

        def no_tts(*_: object, **__: object) -> None:
            raise RuntimeError("trying to generate speech from text without a TTS model")

        c.session.say = no_tts  # type: ignore[method-assign]  # as on a call, with the room's audio
        await c.agent.cancel()
        state = await c.ended()
        assert (state.ended_by, state.end_reason) == ("system", "participant_removed")
        assert c.transcript()[-1].content == "Sorry Ada, I must go."
    assert "word for word, and nothing else: Sorry Ada, I must go." in json.dumps(fake_llm.requests[-1])


async def test_max_duration_says_its_message_and_ends(fake_llm: FakeOpenAI) -> None:
    spec = make_spec(
        first_sentence_mode="none",
        max_call_duration_secs=0.5,
        max_duration_end_message="Time is up, {{name}}. Bye!",
    )
    started = time.monotonic()
    async with call(fake_llm, spec) as c:
        state = await c.ended()
        assert time.monotonic() - started >= 0.4  # 0.5 s minus the farewell buffer (20 %)
        assert (state.ended_by, state.end_reason) == ("system", "max_duration")
        last = [i for i in c.session.history.items if i.type == "message"][-1]
        assert last.text_content == "Time is up, Ada. Bye!"


async def test_max_duration_without_a_message_runs_the_whole_limit(fake_llm: FakeOpenAI) -> None:
    """The farewell's buffer cut a call without a farewell at 80 % of its limit (50 s of a minute)."""
    spec = make_spec(first_sentence_mode="none", max_call_duration_secs=1.0)
    started = time.monotonic()
    async with call(fake_llm, spec) as c:
        state = await c.ended()
        assert time.monotonic() - started >= 1.0
        assert (state.ended_by, state.end_reason) == ("system", "max_duration")


# -- answering machines, IVR, screening ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def answered_with_amd(
    fake_llm: FakeOpenAI, spec: CallSpec, config: AgentConfig
) -> AsyncIterator[tuple[OutdialAgent, AgentSession, Any]]:
    """The session started while the phone rings, AMD built as the job builds it, listening once the
    callee picked up."""
    async with (
        openai.LLM(model="fake-model", base_url=f"{fake_llm.url}/v1", api_key="sk-test") as model,
        AgentSession(llm=model) as session,
    ):
        agent = OutdialAgent(spec, CallDeps(control=RecordingControl(), now=lambda: NOW))
        await session.start(agent)
        amd = build_amd(session, spec.assistant, config)
        assert amd is not None
        async with amd:

            async def listening() -> bool:
                return amd.started

            await eventually(listening, bool, timeout=5)
            agent.state.mark_answered()
            yield agent, session, amd


async def first_words(agent: OutdialAgent, session: AgentSession, amd: Any, within: float) -> list[Any]:
    """What the agent says once AMD's verdict is in, within `within` seconds."""
    async with asyncio.timeout(within):
        await agent.listen_for_answering_machine(amd)

        async def spoken() -> list[Any]:
            return transcript_from(session.history.items)

        return await eventually(spoken, bool, timeout=within)


@pytest.mark.parametrize(
    ("greeting", "verdict", "said", "result"),
    [
        (
            "Hi, you've reached Ada. Leave a message after the tone.",
            "machine-vm",
            "Hi Ada, call back.",
            "voicemail",
        ),
        ("Hello? Ada speaking.", "human", "Hello Ada, it's Sam.", "human"),
    ],
)
async def test_answering_machine_detection_drives_the_call(
    fake_llm: FakeOpenAI, greeting: str, verdict: str, said: str, result: str
) -> None:
    """livekit-agents' AMD, built as the job builds it, hears the greeting through the hooks the audio
    pipeline calls; its classifier asks the (fake) LLM, and the verdict decides what the agent says."""
    fake_llm.call("save_prediction", label=verdict)
    spec = make_spec(
        first_sentence="Hello {{name}}, it's Sam.",
        first_sentence_mode="static",
        voicemail_message="Hi {{name}}, call back.",
    )
    async with answered_with_amd(fake_llm, spec, AgentConfig()) as (agent, session, amd):
        amd._on_user_speech_started()
        amd._on_transcript(greeting)
        amd._on_user_speech_ended(3.0)  # the greeting ended; silence since
        transcript = await first_words(agent, session, amd, within=10)
    classify = fake_llm.requests[0]
    assert classify["messages"][0]["content"] == AMD_PROMPT  # the library's own classifier
    assert classify["messages"][1]["content"] == greeting
    assert [t.content for t in transcript] == [said]  # the first sentence never reached a machine
    assert agent.state.result(transcript) == result
    assert agent.state.ended.is_set() == (result == "voicemail")


async def test_a_callee_who_picks_up_in_silence_hears_the_first_sentence_soon(fake_llm: FakeOpenAI) -> None:
    """AMD holds the first sentence until its verdict, which for silence came after livekit-agents' 10 s:
    a callee waiting for the caller to speak heard nothing for 10 s (and often hung up)."""
    spec = make_spec(first_sentence="Hello {{name}}, it's Sam.", first_sentence_mode="static")
    async with answered_with_amd(fake_llm, spec, AgentConfig(amd_no_speech_secs=1.0)) as (
        agent,
        session,
        amd,
    ):
        transcript = await first_words(agent, session, amd, within=5)  # was 10 s of silence, then it
    assert [t.content for t in transcript] == ["Hello Ada, it's Sam."]
    assert agent.state.detection == "uncertain"


async def test_voicemail_leaves_the_message_then_hangs_up(fake_llm: FakeOpenAI) -> None:
    spec = make_spec(
        first_sentence_mode="none", voicemail_message="Hi {{name}}, call us back about {{product}}."
    )
    async with call(fake_llm, spec) as c:
        c.agent.on_answering_machine("machine-vm", "Leave a message after the tone.")
        state = await c.ended()
        transcript = c.transcript()
    assert [t.content for t in transcript] == ["Hi Ada, call us back about solar panels."]
    assert (state.ended_by, state.end_reason) == ("agent", "voicemail")
    assert state.result(transcript) == "voicemail"


@pytest.mark.parametrize("simulation", ["voicemail", "human"])
async def test_the_simulated_callee_hears_the_calls_own_variables_as_the_agent_says_them(
    fake_llm: FakeOpenAI, simulation: str
) -> None:
    """`{{from_phone_number}}` (and `call_id`, `to_phone_number`) in a sentence: the voice agent fills
    them in, the simulated provider left them as written."""
    spec = make_spec(
        first_sentence_mode="none",
        first_sentence="Hello, it's {{from_phone_number}} calling.",
        voicemail_message="Please call us back on {{from_phone_number}}.",
        end_of_call_sentence="Your reference is {{call_id}}.",
    )
    async with call(fake_llm, spec) as c:
        c.agent.on_answering_machine("machine-vm", "Leave a message after the tone.")
        await c.ended()
        [message] = c.transcript()
    request = ConverseRequest(
        call_id=spec.call_id,
        attempt_id=spec.attempt_id,
        attempt_number=1,
        to_phone_number=spec.to_phone_number,
        from_phone_number=spec.from_phone_number,
        assistant=spec.assistant,
        prompt_variables=spec.prompt_variables,
        metadata={"simulation": simulation},
    )
    simulated = [t.content for t in (await SimulatedTelephony().converse(request)).transcript or []]
    if simulation == "voicemail":
        assert simulated[-1] == message.content == f"Please call us back on {FROM}."
    else:
        assert f"Hello, it's {FROM} calling." in simulated and simulated[-1] == "Your reference is c1."


async def test_voicemail_without_message_hangs_up_silently(fake_llm: FakeOpenAI) -> None:
    async with call(fake_llm, make_spec(first_sentence_mode="none")) as c:
        c.agent.on_answering_machine("machine-vm", "Leave a message.")
        state = await c.ended()
        assert c.transcript() == []
    assert state.result([]) == "voicemail" and state.end_reason == "voicemail"


async def test_ivr_without_navigation_hangs_up(fake_llm: FakeOpenAI) -> None:
    async with call(fake_llm, make_spec(first_sentence_mode="none")) as c:
        c.agent.on_answering_machine("machine-ivr", "For sales press 1.")
        state = await c.ended()
    assert state.end_reason == "ivr_no_navigate" and state.result([]) == "IVR"


async def test_ivr_navigation_presses_keys_skips_turns_and_reaches_a_human(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("send_dtmf", digits="1")
    fake_llm.say("")  # after the tool: nothing to say to a machine
    fake_llm.call("skip_turn")
    fake_llm.call("human_reached")
    fake_llm.say("Hello, I'm calling about solar panels.")
    pressed: list[tuple[int, str]] = []

    class Participant:
        async def publish_dtmf(self, *, code: int, digit: str) -> None:
            pressed.append((code, digit))

    class Room:
        name = "outdial-att-1"
        local_participant = Participant()

    class Job:
        room = Room()

    control = LiveKitCallControl(Job(), trunk_id="ST_1", from_phone_number=FROM)  # type: ignore[arg-type]
    spec = make_spec(first_sentence_mode="none", ivr_navigation_enabled=True)
    async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
        navigation = c.agent.on_answering_machine("machine-ivr", "Welcome. For sales, press 1.")
        assert navigation is not None
        await navigation  # the agent navigates the menu it was greeted with
        run = await c.session.run(user_input="Please hold while we connect you.")
        run.expect.next_event().is_function_call(name="skip_turn")
        assert not [e for e in run.events if e.type == "message"]  # stayed silent
        run = await c.session.run(user_input="Sales, this is Bob speaking.")
        run.expect.next_event().is_function_call(name="human_reached")
        transcript = c.transcript()
        assert c.state.result(transcript) == "human"
    assert pressed == [(1, "1")]
    dtmf = next(t for t in transcript if t.tool_name == "send_dtmf")
    assert dtmf.tool_arguments == {"digits": "1"} and dtmf.tool_output == "pressed 1"


async def test_a_menu_navigated_to_a_person_is_a_human_reached_without_the_signal_tool(
    fake_llm: FakeOpenAI,
) -> None:
    """The LLM talked with the person the menu put through but never called `human_reached`: the attempt
    was `IVR`, so no analysis, and the order called the person again."""
    fake_llm.call("send_dtmf", digits="1")
    fake_llm.say("")
    fake_llm.say("Hello, I'm Sam from Sunny Energy, calling about solar panels. Is this a good time?")
    fake_llm.say("Great, I'll send you the brochure.")
    spec = make_spec(first_sentence_mode="none", ivr_navigation_enabled=True)
    async with call(fake_llm, spec) as c:
        navigation = c.agent.on_answering_machine("machine-ivr", "Welcome. For sales, press 1.")
        assert navigation is not None
        await navigation
        await c.session.run(user_input="Sales, Bob speaking.")
        await c.session.run(user_input="Yes, I'm interested, send me a brochure please.")
        transcript = c.transcript()
        assert c.state.result(transcript) == "human"


def _entry(role: str, content: str, tool: str | None = None) -> TranscriptEntry:
    return TranscriptEntry(role=role, content=content, tool_name=tool)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("after_the_keys", "reached"),
    [
        ([("user", "Sales, Bob speaking."), ("assistant", "Hi Bob!"), ("user", "Hi.")], True),
        (
            [("user", "Sales."), ("assistant", "Hello?"), ("user", "For billing, press 2.")],
            False,
        ),  # still a menu
        ([("user", "Pour les ventes, appuyez sur 1."), ("assistant", "Bonjour"), ("user", "Oui")], False),
        ([("user", "Please hold."), ("user", "Bob speaking.")], False),  # the agent never spoke to them
        ([("assistant", "Hello?")], False),  # nobody answered
    ],
)
def test_a_person_reached_through_a_menu_is_told_from_the_menu(
    after_the_keys: list[tuple[str, str]], reached: bool
) -> None:
    menu = [_entry("user", "Welcome. For sales, press 1."), _entry("tool", "pressed 1", "send_dtmf")]
    assert reached_through_menu([*menu, *(_entry(*e) for e in after_the_keys)]) == reached
    assert not reached_through_menu([_entry(*e) for e in after_the_keys])  # no key pressed: no menu passed


async def test_call_screening_is_answered_and_recorded(fake_llm: FakeOpenAI) -> None:
    fake_llm.say("This is Sam from Sunny Energy, calling Ada about solar panels.")
    async with call(fake_llm, make_spec(first_sentence_mode="none")) as c:
        answer = c.agent.on_answering_machine(
            "machine-ivr", "Hi, if you record your name and reason for calling..."
        )
        assert answer is not None
        await answer  # the agent answers the screening first (else the callee's words may interrupt it)
        await c.session.run(
            user_input="Hi, if you record your name and reason for calling, "
            "I'll see if this person is available."
        )
        transcript = c.transcript()
    assert "say who you are and why you are calling" in json.dumps(fake_llm.requests[0]["messages"])
    assert c.state.result(transcript) == "ios-screening-filter"


# -- transfer ------------------------------------------------------------------------------------------


async def test_cold_transfer_refers_the_callee_through_livekit(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("transfer_to_human", reason="wants a human")
    async with running_livekit() as lk, api.LiveKitAPI(lk.url, API_KEY, API_SECRET) as lkapi:

        class Job:
            class room:  # noqa: N801 - mimics JobContext.room
                name = "outdial-att-1"

        Job.api = lkapi  # type: ignore[attr-defined]
        control = LiveKitCallControl(Job(), trunk_id="ST_1", from_phone_number=FROM)  # type: ignore[arg-type]
        spec = make_spec(
            first_sentence_mode="none", transfer_phone_number="+33612345679", human_transfer_mode="cold"
        )
        async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
            await c.session.run(user_input="I want to talk to a person.")
            state = await c.ended()
        transfer = lk.calls("TransferSIPParticipant")[0]
    assert (transfer.room_name, transfer.participant_identity, transfer.transfer_to) == (
        "outdial-att-1",
        "callee",
        "tel:+33612345679",
    )
    assert (state.ended_by, state.end_reason, state.hang_up) == ("agent", "transfer", True)


async def test_failed_cold_transfer_returns_to_the_callee(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("transfer_to_human", reason="wants a human")
    fake_llm.say("I'm sorry, nobody is available right now. Can I help you myself?")
    async with running_livekit() as lk, api.LiveKitAPI(lk.url, API_KEY, API_SECRET) as lkapi:
        lk.transfer_error = (429, "resource_exhausted", 486)

        class Job:
            class room:  # noqa: N801
                name = "outdial-att-1"

        Job.api = lkapi  # type: ignore[attr-defined]
        control = LiveKitCallControl(Job(), trunk_id="ST_1", from_phone_number=FROM)  # type: ignore[arg-type]
        spec = make_spec(first_sentence_mode="none", transfer_phone_number="+33612345679")
        async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
            run = await c.session.run(user_input="Put me through to someone.")
            run.expect.next_event().is_function_call(name="transfer_to_human")
            output = run.expect.next_event().is_function_call_output().event().item
            run.expect.next_event().is_message(role="assistant")
            assert not c.state.ended.is_set()
    assert output.is_error and "486" in output.output and "nobody is available" in output.output


async def test_warm_transfer_briefs_with_the_summary_instructions(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("transfer_to_human", reason="billing question")
    control = RecordingControl()
    spec = make_spec(
        first_sentence="Hello Ada.",
        first_sentence_mode="static",
        transfer_phone_number="+33612345679",
        human_transfer_mode="warm",
        warm_transfer_summary_instructions="Mention {{name}}'s interest in {{product}}.",
    )
    async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
        await c.session.run(user_input="I have a billing question for a human.")
        state = await c.ended()
    kind, number, summary, history = control.events[0]
    # the reason the LLM gave goes to the colleague too (it was dropped, though the tool said so)
    briefed = "Mention Ada's interest in solar panels.\nWhy the caller needs a colleague: billing question"
    assert (kind, number, summary) == ("warm", "+33612345679", briefed)
    assert "I have a billing question for a human." in history  # the colleague is briefed on the call
    assert (state.end_reason, state.hang_up) == ("transfer", False)  # callee and human stay


async def test_failed_warm_transfer_returns_to_the_callee(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """livekit-agents' own WarmTransferTask, in a fake job whose room cannot reach the colleague: the
    task fails to dial, the tool reports it and the agent is back with the callee."""
    monkeypatch.setenv("LIVEKIT_API_KEY", API_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    fake_llm.call("transfer_to_human", reason="billing")
    fake_llm.say("Nobody answered, sorry. Shall we continue?")
    spec = make_spec(
        first_sentence="Hello Ada.",
        first_sentence_mode="static",
        transfer_phone_number="+33612345679",
        human_transfer_mode="warm",
        warm_transfer_summary_instructions="Mention {{name}}'s interest in {{product}}.",
    )
    with fake_job_context() as job:
        control = LiveKitCallControl(job, trunk_id="ST_1", from_phone_number=FROM, hold_music=False)
        async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
            with contextlib.suppress(ToolError):  # a test run surfaces the task's own failure too
                await c.session.run(user_input="A human please.")

            async def said() -> list[Any]:
                return c.transcript()

            await eventually(said, lambda t: t[-1].role == "assistant", timeout=10)
            assert not c.state.ended.is_set() and c.session.current_agent is c.agent
            briefing = next(
                i.instructions
                for i in c.session.history.items
                if i.type == "agent_config_update" and "connect_to_caller" in (i.tools_added or [])
            )
            transcript = c.transcript()
    assert "Mention Ada's interest in solar panels." in briefing  # the colleague's briefing
    assert "Caller: A human please." in briefing
    tool = next(t for t in transcript if t.tool_name == "transfer_to_human")
    assert tool.tool_is_error and "could not dial human agent" in (tool.tool_output or "")
    assert transcript[-1].content == "Nobody answered, sorry. Shall we continue?"


# -- SMS -----------------------------------------------------------------------------------------------


async def test_send_sms_with_the_template(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("send_sms")
    fake_llm.say("Done, I've texted you.")
    outbox = SimulatedSmsOutbox()
    spec = make_spec(
        first_sentence_mode="none", sms_enabled=True, sms_template="Hi {{name}}, info on {{product}}: x.y/z"
    )
    deps = CallDeps(control=RecordingControl(), sms=outbox, now=lambda: NOW)
    async with call(fake_llm, spec, deps) as c:
        await c.session.run(user_input="Text me the link.")
    (message,) = outbox.sent.values()
    assert (message.to, message.from_, message.body) == (TO, FROM, "Hi Ada, info on solar panels: x.y/z")
    sms_tool = next(t for t in fake_llm.requests[0]["tools"] if t["function"]["name"] == "send_sms")
    assert sms_tool["function"]["parameters"].get("properties", {}) == {}  # the LLM writes nothing


async def test_send_sms_written_by_the_llm_through_twilio(fake_llm: FakeOpenAI) -> None:
    """The LLM's text goes through the Twilio adapter (a local Messages API); a refusal comes back to
    the LLM as the tool's error, and the call goes on."""
    twilio = FakeTwilio(
        [
            (201, {"sid": "SM1", "status": "queued"}),
            (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}),
        ]
    )
    fake_llm.call("send_sms", message="Our offer: 10% off.")
    fake_llm.say("Sent.")
    fake_llm.call("send_sms", message="Reminder: 10% off.")
    fake_llm.say("Sorry, I could not text you.")
    spec = make_spec(first_sentence_mode="none", sms_enabled=True)
    async with http_fakes.serve(twilio.routes) as base:
        sms = TwilioSms("AC0123456789", "auth-token-0123456789", base_url=base)
        deps = CallDeps(control=RecordingControl(), sms=sms, now=lambda: NOW)
        async with call(fake_llm, spec, deps) as c:
            await c.session.run(user_input="Text me the offer.")
            await c.session.run(user_input="And a reminder please.")
            tools = [t for t in c.transcript() if t.tool_name == "send_sms"]
    assert [form for _, _, form in twilio.requests] == [
        {"To": TO, "From": FROM, "Body": "Our offer: 10% off."},
        {"To": TO, "From": FROM, "Body": "Reminder: 10% off."},
    ]
    assert (tools[0].tool_output, tools[0].tool_is_error) == ("Text sent (queued).", False)
    assert tools[1].tool_is_error and "code 21610" in (tools[1].tool_output or "")
    assert not c.state.ended.is_set()


# -- custom HTTP tools ---------------------------------------------------------------------------------


def custom_tool(base: str) -> dict[str, Any]:
    return CUSTOM_TOOL | {"url": base + "/stock/{{city}}"}


CUSTOM_TOOL = {
    "name": "check_stock",
    "description": "Check stock for a product in a city.",
    "method": "POST",
    "url": "https://stock.example/stock/{{city}}",
    "headers": [{"key": "Authorization", "value": "Bearer secret-{{name}}"}],
    "query_params": [{"key": "customer", "value": "{{name}}"}],
    "body_template": '{"product": "{{product}}", "quantity": "{{quantity}}", '
    '"express": "{{express}}", "note": "for {{name}}"}',
    "input_schema": [
        {"name": "city", "type": "string", "required": True, "description": "The city"},
        {"name": "quantity", "type": "number", "required": True},
        {"name": "express", "type": "boolean", "required": False},
    ],
}


async def test_custom_tool_templating_reaches_the_endpoint(fake_llm: FakeOpenAI) -> None:
    seen: list[dict[str, Any]] = []

    async def stock(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.raw_path,
                "auth": request.headers.get("Authorization"),
                "body": await request.json(),
            }
        )
        return web.json_response({"in_stock": 12})

    async with serve([web.post("/stock/{city}", stock)]) as base:
        fake_llm.call("check_stock", city="New York", quantity=3, express=True)
        fake_llm.say("We have 12 in stock.")
        spec = make_spec(first_sentence_mode="none", custom_tools=[custom_tool(base)])
        async with guarded_client(allow_private=True) as http:
            deps = CallDeps(control=RecordingControl(), http=http, now=lambda: NOW)
            async with call(fake_llm, spec, deps) as c:
                run = await c.session.run(user_input="Do you have 3 in New York, express?")
                run.expect.next_event().is_function_call(name="check_stock")
                output = run.expect.next_event().is_function_call_output().event().item
                transcript = c.transcript()
    assert seen == [
        {
            "path": "/stock/New%20York?customer=Ada",
            "auth": "Bearer secret-Ada",
            "body": {"product": "solar panels", "quantity": 3, "express": True, "note": "for Ada"},
        }
    ]
    assert output.output == '{"in_stock": 12}' and not output.is_error
    tool = next(t for t in fake_llm.requests[0]["tools"] if t["function"]["name"] == "check_stock")
    assert tool["function"]["parameters"]["required"] == ["city", "quantity"]
    entry = next(t for t in transcript if t.role == "tool")
    assert entry.tool_name == "check_stock" and entry.tool_arguments == {
        "city": "New York",
        "quantity": 3,
        "express": True,
    }
    assert entry.tool_output == '{"in_stock": 12}' and entry.tool_is_error is False


async def test_custom_tool_errors_go_back_to_the_llm(fake_llm: FakeOpenAI) -> None:
    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="warehouse offline")

    async with serve([web.post("/stock/{city}", broken)]) as base:
        fake_llm.call("check_stock", city="Paris", quantity=1)
        fake_llm.say("Sorry, I can't check the stock right now.")
        spec = make_spec(first_sentence_mode="none", custom_tools=[custom_tool(base)])
        async with guarded_client(allow_private=True) as http:
            async with call(
                fake_llm, spec, CallDeps(control=RecordingControl(), http=http, now=lambda: NOW)
            ) as c:
                await c.session.run(user_input="Any in Paris?")
                entry = next(t for t in c.transcript() if t.role == "tool")
    assert entry.tool_is_error is True and "HTTP 503: warehouse offline" in (entry.tool_output or "")
    tool_message = next(m for m in fake_llm.requests[1]["messages"] if m["role"] == "tool")
    assert "warehouse offline" in tool_message["content"]


async def test_custom_tool_refuses_private_addresses_in_production(fake_llm: FakeOpenAI) -> None:
    fake_llm.call("check_stock", city="Paris", quantity=1)
    fake_llm.say("Sorry.")
    spec = make_spec(first_sentence_mode="none", custom_tools=[custom_tool("http://127.0.0.1:9")])
    async with guarded_client(allow_private=False) as http:
        async with call(
            fake_llm, spec, CallDeps(control=RecordingControl(), http=http, now=lambda: NOW)
        ) as c:
            await c.session.run(user_input="Any in Paris?")
            entry = next(t for t in c.transcript() if t.role == "tool")
    assert entry.tool_is_error and "refused URL" in (entry.tool_output or "")


async def test_a_tool_request_httpx_refuses_never_quotes_its_headers() -> None:
    """A header value with a stray newline (pasted, or a variable) is refused by httpx with a message
    quoting the header: the LLM hears the error and the transcript keeps it, so only its type goes."""
    secret = "Bearer sk-live-SECRET-0123456789"

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with serve([web.get("/x", ok)]) as base:
        spec = CustomToolRecord(
            description="d",
            method="GET",
            name="lookup",
            url=f"{base}/x",
            headers=[KeyValueRecord(key="Authorization", value=secret + "\n")],
        )
        async with guarded_client(allow_private=True) as http:
            with pytest.raises(ToolError) as refused:
                await CustomHttpTool(spec, {}, http)._call({})
    assert "request failed" in refused.value.message and secret not in refused.value.message


@pytest.mark.parametrize("status", [401, 200])
async def test_a_tool_answer_that_echoes_its_secrets_reaches_the_conversation_without_them(
    status: int,
) -> None:
    """A service refusing a request often quotes what it was sent: the answer went to the LLM and into
    the transcript (the Web UI, a webhook, the outcome email), the tool's token and key in clear."""

    async def echo(request: web.Request) -> web.Response:
        said = f"invalid credentials: {request.headers['Authorization']} for {request.path_qs}"
        plain = f"; {request.headers['Accept']} in {request.headers['X-Timezone']}"  # not secrets
        return web.Response(status=status, text=said + plain)

    async with serve([web.get("/crm", echo)]) as base:
        spec = CustomToolRecord(
            description="d",
            method="GET",
            name="crm_lookup",
            url=f"{base}/crm?tenant=acme",
            headers=[
                KeyValueRecord(key="Authorization", value="Bearer {{crm_token}}"),
                KeyValueRecord(key="Accept", value="application/json"),
                KeyValueRecord(key="X-Timezone", value="Europe/Paris"),
            ],
            query_params=[KeyValueRecord(key="api_key", value="QPSECRET-456-abcdef")],
        )
        async with guarded_client(allow_private=True) as http:
            tool = CustomHttpTool(spec, {"crm_token": "SECRET-TOOL-123"}, http)
            if status == 200:
                said = await tool._call({})
            else:
                with pytest.raises(ToolError) as refused:
                    await tool._call({})
                said = refused.value.message
    # (plain values, which the LLM may need, stay: a tenant, a header's media type or time zone)
    expected = "invalid credentials: *** for /crm?tenant=acme&api_key=***; application/json in Europe/Paris"
    assert expected in said, said
    assert "SECRET" not in said


async def test_a_custom_tool_takes_only_its_input_schemas_arguments_from_the_llm() -> None:
    """An argument the LLM adds (a callee may steer it) replaced a prompt variable of its name, the
    header's token here, and went into the body; a required one it left out went as empty text. The
    query_params go after the URL's own query (httpx's `params` replaced it)."""
    seen: list[tuple[str, str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path_qs, request.headers["Authorization"], await request.json()))
        return web.Response(text="ok")

    async with serve([web.post("/lookup", record)]) as base:
        spec = CustomToolRecord(
            description="d",
            method="POST",
            name="lookup",
            url=f"{base}/lookup?q={{{{q}}}}",
            headers=[KeyValueRecord(key="Authorization", value="Bearer {{api_token}}")],
            query_params=[KeyValueRecord(key="tenant", value="{{tenant}}")],  # after the URL's own query
            input_schema=[FieldSpecRecord(name="q", type="string", required=True)],
        )
        async with guarded_client(allow_private=True) as http:
            tool = CustomHttpTool(spec, {"api_token": "REAL", "tenant": "t1"}, http)
            assert await tool._call({"q": "x", "api_token": "FORGED", "extra": 1}) == "ok"
            with pytest.raises(ToolError, match="missing required argument"):
                await tool._call({"api_token": "FORGED"})
    assert seen == [("/lookup?q=x&tenant=t1", "Bearer REAL", {"q": "x"})]


async def test_a_header_with_accents_is_sent() -> None:
    """httpx sends header text as ASCII only: a company or a name with accents (a prompt variable, or
    written in the header) failed the tool on every call, the LLM hearing "An internal error"."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers["X-Org"])
        return web.Response(text="ok")

    async with serve([web.get("/x", record)]) as base:
        header = KeyValueRecord(key="X-Org", value="Société {{first_name}}")
        spec = CustomToolRecord(
            description="d", method="GET", name="lookup", url=f"{base}/x", headers=[header]
        )
        async with guarded_client(allow_private=True) as http:
            assert await CustomHttpTool(spec, {"first_name": "Élise 東京"}, http)._call({}) == "ok"
            with pytest.raises(ToolError, match="a header is not one HTTP can send"):
                await CustomHttpTool(spec, {"first_name": "\ud800"}, http)._call({})
    assert seen == ["Société Élise 東京"]


def test_query_params_are_appended_to_the_urls_own_query_as_written() -> None:
    """The URL's own query is kept as written (re-encoded, `%20` became `+`, a bare `?wsdl` `wsdl=`)."""
    assert str(with_params("https://x.io/s?city=New%20York&wsdl", [("t", "a b&c")])) == (
        "https://x.io/s?city=New%20York&wsdl&t=a%20b%26c"
    )
    assert str(with_params("https://x.io/s#top", [("t", "1")])) == "https://x.io/s?t=1#top"


async def test_a_url_that_is_none_once_filled_in_is_a_tool_error_the_llm_hears() -> None:
    spec = CustomToolRecord(
        description="d",
        method="GET",
        name="lookup",
        url="http://{{x}}.example.com/s",
        query_params=[KeyValueRecord(key="k", value="{{y}}")],
        input_schema=[
            FieldSpecRecord(name="x", type="string", required=True),
            FieldSpecRecord(name="y", type="string", required=False),
        ],
    )
    async with guarded_client(allow_private=True) as http:
        for arguments in ({"x": "xn--zz"}, {"x": "xn--n3h"}, {"x": "a", "y": "\ud800"}):
            with pytest.raises(ToolError, match="its URL is not one once filled in"):
                await CustomHttpTool(spec, {}, http)._call(arguments)


def test_prompt_variables_of_any_name_are_filled_in() -> None:
    """The seed's prompt_variables are any Dict[str, str]: accents and spaces too."""
    variables = {"prénom": "Élise", "first name": "Ada", "name": "Claire"}
    template = '{{prénom}}, {{ first name }}, {{name}}, {{missing}}, {{"json": 1}}'
    assert interpolate(template, variables) == 'Élise, Ada, Claire, {{missing}}, {{"json": 1}}'


def test_templating_rules() -> None:
    values = {"q": 'a "b"', "n": 2, "flag": False}
    assert render_url("https://x.io/s/{{q}}/{{missing}}", values) == "https://x.io/s/a%20%22b%22/"
    assert render_body(
        '{"q": "{{q}}", "n": "{{n}}", "f": "{{flag}}", "m": "{{missing}}", "s": "<{{n}}>"}', values
    ) == {
        "q": 'a "b"',
        "n": 2,
        "f": False,
        "m": None,
        "s": "<2>",
    }
    with pytest.raises(ValueError, match="not JSON"):
        render_body("{{{q}}", values)
    # One pass: a value holding a placeholder is sent as given (a callee's words never pull in a
    # variable); a bare number left out is null, as the API's check of the template supposes.
    said = {"note": "my code is {{token}}", "token": "SECRET", "n": 3}
    assert render_body('{"a": "{{note}}", "b": "<{{note}}>", "n": {{n}}, "m": {{count}}}', said) == {
        "a": "my code is {{token}}",
        "b": "<my code is {{token}}>",
        "n": 3,
        "m": None,
    }
    assert render_body('{"a": "x \\" {{n}} \\\\", "b": {{n}}}', said) == {"a": 'x " 3 \\', "b": 3}
    # A bare one is one JSON value, whatever the LLM sends: text steered to add a field stays text.
    steered = {"quantity": '2, "unit_price": 0', "count": "3", "flag": "true", "word": "abc"}
    template = '{"unit_price": 450, "quantity": {{quantity}}, "c": {{count}}, "f": {{flag}}, "w": {{word}}}'
    assert render_body(template, steered) == {
        "unit_price": 450,
        "quantity": '2, "unit_price": 0',
        "c": 3,
        "f": True,
        "w": "abc",
    }
    enum = Assistant.model_validate(
        {
            "prompt": "p",
            "custom_tools": [
                CUSTOM_TOOL
                | {
                    "input_schema": [
                        {"name": "c", "type": "enum", "required": True, "enum_options": ["a", "b"]},
                        {"name": "d", "type": "date", "required": False},
                    ]
                }
            ],
        }
    )
    schema = parameters_schema(
        call_assistant_from(enum, id="a", organization_id="o", now=NOW).custom_tools[0].input_schema
    )  # type: ignore[index]
    assert schema["properties"]["c"] == {"type": "string", "enum": ["a", "b"]}
    assert schema["properties"]["d"]["format"] == "date" and schema["required"] == ["c"]


# -- Calendly ------------------------------------------------------------------------------------------


async def test_calendly_availability_and_booking(fake_llm: FakeOpenAI) -> None:
    seen: list[tuple[str, Any, str | None]] = []

    async def available(request: web.Request) -> web.Response:
        seen.append(("GET", dict(request.query), request.headers.get("Authorization")))
        return web.json_response(
            {
                "collection": [
                    {
                        "status": "available",
                        "start_time": "2026-12-02T09:00:00.000000Z",
                        "invitees_remaining": 1,
                    }
                ]
            }
        )

    async def invitees(request: web.Request) -> web.Response:
        seen.append(("POST", await request.json(), request.headers.get("Authorization")))
        return web.json_response(
            {"resource": {"event": "https://api.calendly.com/scheduled_events/E1", "cancel_url": "c"}}
        )

    async with serve(
        [web.get("/event_type_available_times", available), web.post("/invitees", invitees)]
    ) as base:
        fake_llm.call("check_availability", start_date="2026-12-02", end_date="2026-12-03")
        fake_llm.say("I have Wednesday at 10:00.")
        fake_llm.call(
            "book_meeting",
            start_time="2026-12-02T10:00:00+01:00",
            name="Ada Lovelace",
            email="ada@example.com",
        )
        fake_llm.say("Booked!")
        spec = make_spec(
            first_sentence_mode="none", calendly={"connection_id": "conn-1", "event_type_id": "ET123"}
        )
        config = AgentConfig(
            calendly_api_url=base, calendly_tokens={"conn-1": "tok-1"}, home_organization="org"
        )
        async with guarded_client(allow_private=True) as http:
            deps = CallDeps(control=RecordingControl(), config=config, calendly_http=http, now=lambda: NOW)
            async with call(fake_llm, spec, deps) as c:
                run = await c.session.run(user_input="When are you free?")
                availability = run.expect.skip_next(1).next_event().is_function_call_output().event().item
                await c.session.run(user_input="Wednesday 10, Ada Lovelace, ada@example.com")
    get, post = seen
    assert get[1] == {
        "event_type": f"{base}/event_types/ET123",
        "start_time": "2026-12-01T23:00:00.000000Z",  # midnight in Paris
        "end_time": "2026-12-03T22:59:00.000000Z",
    }
    assert get[2] == "Bearer tok-1"
    assert json.loads(availability.output) == {
        "timezone": "Europe/Paris",
        "available_start_times": ["2026-12-02T10:00:00+01:00"],
    }
    assert post[1] == {
        "event_type": f"{base}/event_types/ET123",
        "start_time": "2026-12-02T09:00:00.000000Z",
        "invitee": {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "timezone": "Europe/Paris",
            "text_reminder_number": TO,
        },
    }


# -- transcript, models, voices, sounds ----------------------------------------------------------------


def test_transcript_keeps_messages_and_tool_calls() -> None:
    items = [
        llm.ChatMessage(role="system", content=["instructions"]),
        llm.ChatMessage(role="assistant", content=["Hello"]),
        llm.ChatMessage(role="user", content=["Hi"]),
        llm.FunctionCall(call_id="1", name="lookup", arguments='{"id": 7}'),
        llm.FunctionCallOutput(call_id="1", name="lookup", output="not found", is_error=True),
    ]
    transcript = transcript_from(items)
    assert [(t.role, t.content) for t in transcript] == [
        ("assistant", "Hello"),
        ("user", "Hi"),
        ("tool", "not found"),
    ]
    tool = transcript[-1]
    assert (tool.tool_name, tool.tool_arguments, tool.tool_output, tool.tool_is_error) == (
        "lookup",
        {"id": 7},
        "not found",
        True,
    )


def test_llm_model_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "g-test")
    settings = Settings(openai_api_key="sk-o", openrouter_api_key="sk-r")
    config = AgentConfig(dedicated_base_urls={"ministral-3-8b-instruct": "https://llm.internal/v1"})

    def built(model: dict[str, Any]) -> Any:
        return build_llm(make_spec(llm_model=model).assistant, settings, config)

    dedicated = built({"name": "gpt-4.1", "type": "dedicated-instance"})
    assert dedicated.model == "gpt-4.1" and str(dedicated._client.base_url).startswith(
        "https://api.openai.com"
    )
    ministral = built({"name": "ministral-3-8b-instruct", "type": "dedicated-instance"})
    assert str(ministral._client.base_url) == "https://llm.internal/v1/"
    routed = built(
        {"type": "openrouter", "openrouter_model_id": "openai/gpt-4.1", "openrouter_provider": "nebius"}
    )
    assert (
        routed.model == "openai/gpt-4.1" and str(routed._client.base_url) == "https://openrouter.ai/api/v1/"
    )
    assert routed._opts.extra_body == {"provider": {"order": ["nebius"], "allow_fallbacks": False}}
    custom = built(
        {
            "type": "custom",
            "api_url": "https://acme.openai.azure.com/openai/v1?api-version=2024-10-21",
            "api_key": "k-c",
            "model_name": "meta-llama/x",
        }
    )
    assert custom.model == "meta-llama/x" and custom._client.api_key == "k-c"
    # The query is sent with every request, not left in the address the path is appended to.
    assert str(custom._client.base_url) == "https://acme.openai.azure.com/openai/v1/"
    assert custom._client.default_query == {"api-version": "2024-10-21"}
    realtime = built(
        {
            "type": "realtime",
            "provider": "openai",
            "realtime_model_id": "gpt-realtime",
            "realtime_voice_id": "marin",
        }
    )
    assert realtime.model == "gpt-realtime" and realtime._opts.voice == "marin"
    gemini = built(
        {
            "type": "realtime",
            "provider": "google",
            "realtime_model_id": "gemini-live",
            "realtime_voice_id": "Puck",
        }
    )
    assert gemini.model == "gemini-live" and gemini._opts.voice == "Puck"
    with pytest.raises(RuntimeError, match="OUTDIAL_DEDICATED_BASE_URLS"):
        build_llm(
            make_spec(llm_model={"name": "ministral-3-8b-instruct", "type": "dedicated-instance"}).assistant,
            settings,
            AgentConfig(),
        )


async def test_voices(monkeypatch: pytest.MonkeyPatch) -> None:  # AgentSession takes the running loop
    monkeypatch.setenv("CARTESIA_API_KEY", "c-test")
    monkeypatch.setenv("ELEVEN_API_KEY", "e-test")
    settings, config = Settings(openai_api_key="sk-o"), AgentConfig()
    cartesia = build_tts(
        make_spec(
            voice={"id": "v-1", "provider": "cartesia", "model": "sonic-3.5", "speed": 1.2, "volume": 1.5}
        ).assistant.voice,
        settings,
        config,
    )
    assert (cartesia._opts.voice, cartesia._opts.speed, cartesia._opts.volume) == ("v-1", 1.2, 1.5)
    assert cartesia._opts.model == "sonic-3.5"  # the official client's voice.model
    assert cartesia._opts.pronunciation_dict_id is None
    spoken = make_spec(
        voice={"id": "v-1", "provider": "cartesia"}, cartesia_dictionary_pronunciation_id="pdict_1"
    ).assistant
    assert build_session(spoken, settings, config).tts._opts.pronunciation_dict_id == "pdict_1"
    eleven = build_tts(
        make_spec(voice={"id": "v-2", "provider": "elevenlabs", "speed": 1.1}).assistant.voice,
        settings,
        config,
    )
    assert eleven._opts.voice_id == "v-2" and eleven._opts.voice_settings.speed == 1.1


async def test_a_catalog_voice_speaks_and_hears_its_own_language(monkeypatch: pytest.MonkeyPatch) -> None:
    """A French voice of `GET /voices` was sent to Cartesia as English (French words, English sounds),
    and the callee's French was transcribed as English; a voice the catalog does not list keeps the
    configured language."""
    from api.voices import catalog

    monkeypatch.setenv("CARTESIA_API_KEY", "c-test")
    settings, config = Settings(openai_api_key="sk-o"), AgentConfig()
    french = next(v for v in catalog() if (v.provider, v.language) == ("cartesia", "fr"))
    voiced = make_spec(voice={"id": french.id, "provider": "cartesia"}).assistant
    session = build_session(voiced, settings, config)
    assert (session.tts._opts.language, session.stt._opts.languages) == ("fr", ["fr"])
    # A deployment calling in Spanish: an English-labelled voice (the catalog's multilingual ones) or an
    # unlisted one forces neither what the callee says nor its own speech to English (a review).
    monkeypatch.setenv("ELEVEN_API_KEY", "e-test")
    spanish = AgentConfig(stt_language="es")
    rachel = next(v.id for v in catalog() if v.provider == "elevenlabs")
    for voice in ({"id": "v-mine", "provider": "cartesia"}, {"id": rachel, "provider": "elevenlabs"}):
        session = build_session(make_spec(voice=voice).assistant, settings, spanish)
        spoken = session.tts._opts.language
        assert session.stt._opts.languages == ["es"] and (spoken == "en" or not is_given(spoken))


async def test_the_session_hears_and_speaks_as_the_assistant_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_session (what the job starts): STT, voice and LLM per assistant, constructed, not connected."""
    monkeypatch.setenv("CARTESIA_API_KEY", "c-test")
    monkeypatch.setenv("GOOGLE_API_KEY", "g-test")
    settings = Settings(openai_api_key="sk-o")
    config = AgentConfig(stt_model="gpt-4o-transcribe", stt_language="fr")
    voiced = make_spec(voice={"id": "v-1", "provider": "cartesia", "speed": 0.9}).assistant
    session = build_session(voiced, settings, config)
    assert isinstance(session.stt, openai.STT) and isinstance(session.tts, cartesia.TTS)
    assert (session.stt._opts.model, session.stt._opts.languages) == ("gpt-4o-transcribe", ["fr"])
    assert (session.tts._opts.voice, session.tts._opts.speed) == ("v-1", 0.9)
    assert isinstance(session.llm, openai.LLM) and session.llm.model == "gpt-4.1"
    default_voice = build_session(make_spec().assistant, settings, config).tts
    assert isinstance(default_voice, openai.TTS)
    assert (default_voice._opts.model, default_voice._opts.voice) == ("gpt-4o-mini-tts", "ash")
    realtime = make_spec(
        llm_model={"type": "realtime", "provider": "google", "realtime_model_id": "gemini-live"}
    ).assistant
    live = build_session(realtime, settings, config)  # hears and speaks itself
    assert live.stt is None and live.tts is None and live.llm.model == "gemini-live"
    assert build_amd(live, realtime, config) is None  # no transcripts of its own for AMD
    assert build_amd(session, voiced, AgentConfig(amd_enabled=False)) is None


async def test_the_transcription_is_told_the_assistants_stt_context() -> None:
    """The assistant's stt_context reaches OpenAI's realtime transcription as the real plugin sends it
    (its `session.update`): as the prompt for every model, and as keywords for the models that take them."""
    updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] == "session.update":
                updates.put_nowait(event["session"]["audio"]["input"]["transcription"])
        return ws

    context = Assistant.model_validate(
        {
            "prompt": "p",
            "stt_context": {"general": [{"key": "company", "value": "Sunny Energy"}], "terms": ["Enphase"]},
        }
    ).stt_context
    sent = []
    async with serve([web.get("/v1/realtime", realtime)]) as url, http_context.open():
        settings = Settings(openai_api_key="sk-o", openai_base_url=f"{url}/v1")
        for model in ("gpt-4o-mini-transcribe", "gpt-transcribe"):  # the second takes keywords
            stt = build_stt(settings, AgentConfig(stt_model=model, stt_language="fr"), context)
            stream = stt.stream()
            stream.push_frame(rtc.AudioFrame(b"\0\0" * 480, 24000, 1, 480))
            sent.append(await asyncio.wait_for(updates.get(), timeout=10))
            await stream.aclose()
            await stt.aclose()
    plain, hinted = sent
    assert (plain["model"], plain["prompt"]) == (
        "gpt-4o-mini-transcribe",
        "company: Sunny Energy\nTerms: Enphase",
    )
    assert not plain.get("keywords")
    assert (hinted["prompt"], hinted["keywords"]) == (plain["prompt"], ["Enphase"])
    assert not is_given(build_stt(settings, AgentConfig(), None)._opts.prompt)  # no context, no prompt


async def test_the_transcription_also_hears_what_the_prompt_says_about_the_call() -> None:
    """As Revox merges prompt-derived context in: each variable the prompt uses becomes an entry,
    unless the stt_context has one of that key (its own value stays)."""
    settings = Settings(openai_api_key="sk-o")
    context = {"general": [{"key": "product", "value": "PV panels"}], "terms": ["kWc"]}
    spec = make_spec(prompt="Call {{name}} about {{ product }}, {{name}}; {{unknown}}.", stt_context=context)
    session = build_session(spec.assistant, settings, AgentConfig(), spec.prompt_variables)
    assert session.stt._opts.prompt == "product: PV panels\nname: Ada\nTerms: kWc"
    noted = {**VARIABLES, "name": "x" * 81}  # a note, not a name
    assert build_session(spec.assistant, settings, AgentConfig(), noted).stt._opts.prompt == (
        "product: PV panels\nTerms: kWc"
    )
    bare = make_spec(prompt="Call {{name}}.")
    assert (
        build_session(bare.assistant, settings, AgentConfig(), bare.prompt_variables).stt._opts.prompt
        == "name: Ada"
    )
    assert not is_given(
        build_session(make_spec(prompt="Hi.").assistant, settings, AgentConfig(), VARIABLES).stt._opts.prompt
    )


async def test_background_and_thinking_sounds() -> None:
    from livekit.agents import BackgroundAudioPlayer, BuiltinAudioClip

    spec = make_spec(
        background_sound="audio/office.ogg",
        background_sound_volume=0.3,
        thinking_sound="keyboard-typing.ogg",
        thinking_sound_volume=0.6,
        thinking_sound_probability=0.4,
    )
    options = sound_options(spec.assistant)
    assert options["ambient_sound"].source == BuiltinAudioClip.OFFICE_AMBIENCE
    assert options["ambient_sound"].volume == 0.3
    (thinking,) = options["thinking_sound"]
    assert (thinking.source, thinking.volume, thinking.probability) == (
        BuiltinAudioClip.KEYBOARD_TYPING,
        0.6,
        0.4,
    )
    assert sound_options(make_spec().assistant) == {}
    await BackgroundAudioPlayer(**options).aclose()  # what the job starts in the room
    clips = (options["ambient_sound"].source, thinking.source)
    assert all(await asyncio.to_thread(lambda: [Path(clip.path()).is_file() for clip in clips]))


def test_voice_agent_worker_registers_the_dispatch_name() -> None:
    from workers.voice_agent import build_server

    settings = Settings(
        livekit_url="ws://127.0.0.1:7880",
        livekit_api_key=API_KEY,
        livekit_api_secret=API_SECRET,
        livekit_agent_name="outdial-test",
        plaintext_history=True,  # as the workers it reads orders from
    )
    server = build_server(settings)
    assert server._agent_name == "outdial-test" and server._entrypoint_fnc is not None


async def test_the_voice_agents_log_never_shows_a_custom_llms_login_or_query(
    fake_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """The custom LLM's client (openai over httpx2) logs each request's URL at INFO; the voice agent's
    logging keeps those lines out, at --dev's DEBUG too."""
    from workers.voice_agent import configure_logging

    configure_logging(dev=True)
    caplog.set_level(logging.DEBUG)
    login = fake_llm.url.replace("http://", "http://llm-user:URL-PASSWORD-1234@")
    url = f"{login}/v1?key=QUERY-KEY-5678"
    custom = {"type": "custom", "api_url": url, "api_key": "k", "model_name": "m"}
    settings = Settings(allow_private_urls=True)
    model = build_llm(make_spec(llm_model=custom).assistant, settings, AgentConfig())
    stream = await model._client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    assert [chunk async for chunk in stream]
    logged = [r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp")]  # not the fake's
    assert fake_llm.requests  # the request went out, the path after /v1
    assert not [line for line in logged if "URL-PASSWORD" in line or "QUERY-KEY" in line]


# -- the job's call, reporting to a real CallOrderWorkflow ---------------------------------------------


@contextlib.asynccontextmanager
async def agent_on_a_livekit_order(
    dev_env: WorkflowEnvironment, task_queue: str, fake_llm: FakeOpenAI
) -> AsyncIterator[tuple[FakeLiveKit, Call, ConverseLink, Any, asyncio.Task[ConverseResult]]]:
    """An order dialed through FakeLiveKit; the agent the dispatch names, in a text session, held by
    the job's own `hold_the_call` (its line is the room: hang-up deletes it)."""
    async with running_livekit() as livekit:
        settings = livekit_settings(livekit)
        async with (
            create_worker(dev_env.client, task_queue=task_queue, settings=settings),
            api.LiveKitAPI(livekit.url, API_KEY, API_SECRET) as lkapi,
        ):
            call_id, handle = await start_livekit_order(dev_env.client, livekit, task_queue)
            attempt_id = await dispatched_attempt(livekit)
            link = ConverseLink(
                dev_env.client, call_id, attempt_id, poll_interval=0.05, heartbeat_interval=0.1
            )
            spec = await link.call()

            class Job:
                api = lkapi

                class room:  # noqa: N801 - mimics JobContext.room
                    name = room_name(attempt_id)

            control = LiveKitCallControl(Job(), trunk_id="ST_1", from_phone_number=FROM)  # type: ignore[arg-type]
            async with call(fake_llm, spec, CallDeps(control=control, now=lambda: NOW)) as c:
                held = asyncio.create_task(hold_the_call(c.session, c.agent, link))
                yield livekit, c, link, handle, held


async def test_the_agent_reports_the_call_and_its_times_to_the_order(
    dev_env: WorkflowEnvironment, task_queue: str, fake_llm: FakeOpenAI
) -> None:
    fake_llm.say("Hello, it's about solar panels.")  # the generated first sentence
    fake_llm.call("end_call")
    async with agent_on_a_livekit_order(dev_env, task_queue, fake_llm) as (livekit, c, link, handle, held):
        await link.found()
        await c.session.run(user_input="No thanks, not interested.")
        result = await asyncio.wait_for(held, 20)
        order = await handle.result()
    assert order.status == "completed"
    attempt = order.call_attempts[0]
    assert (attempt.result, attempt.ended_by, attempt.end_reason) == ("human", "agent", "tool_end_call")
    assert [t.content for t in attempt.transcript or [] if t.role != "tool"] == [
        "Hello, it's about solar panels.",
        "No thanks, not interested.",
        "Bye now.",  # the order's end_of_call_sentence
    ]
    # The attempt's times are the call's own (the agent's clock), not the workflow's.
    assert attempt.answered_at == c.state.answered_at == result.answered_at
    assert attempt.ended_at == c.state.ended_at == result.ended_at
    assert attempt.answered_at < attempt.ended_at  # type: ignore[operator]
    assert [r.room for r in livekit.calls("DeleteRoom")] == [room_name(attempt.id)]  # hung up


async def test_a_hang_up_that_fails_is_asked_again(
    dev_env: WorkflowEnvironment, task_queue: str, fake_llm: FakeOpenAI
) -> None:
    """The agent's one DeleteRoom, failed (LiveKit overloaded), left the callee on a silent line."""
    fake_llm.say("Hello, it's about solar panels.")
    fake_llm.call("end_call")
    async with agent_on_a_livekit_order(dev_env, task_queue, fake_llm) as (livekit, c, link, handle, held):
        delete, failures = livekit._DeleteRoom, iter([True, True])
        livekit._DeleteRoom = (  # type: ignore[method-assign]
            lambda req: (
                _twirp_error(503, "unavailable", "overloaded") if next(failures, False) else delete(req)
            )
        )
        await link.found()
        await c.session.run(user_input="No thanks, not interested.")
        result = await asyncio.wait_for(held, 30)
        await handle.result()
    deleted = [r.room for r in livekit.calls("DeleteRoom")]  # type: ignore[attr-defined]
    assert len(deleted) == 3 and len(set(deleted)) == 1 and deleted[0] not in livekit.rooms
    assert result.end_reason == "tool_end_call"


async def test_an_order_cancelled_mid_conversation_keeps_what_was_said(
    dev_env: WorkflowEnvironment, task_queue: str, fake_llm: FakeOpenAI
) -> None:
    """The agent acknowledged the cancellation without its result: the attempt read as a person reached
    with nothing said (no result, no transcript) in the webhook, search and export; the simulated
    provider kept it."""
    fake_llm.say("Hello, it's about solar panels.")
    fake_llm.say("Great, when would suit you for a demo?")
    async with agent_on_a_livekit_order(dev_env, task_queue, fake_llm) as (livekit, c, link, handle, held):
        await link.found()
        await c.session.run(user_input="Yes I'm interested, my email is ada@example.com")
        await handle.signal("cancel")
        await asyncio.wait_for(held, 20)
        order = await handle.result()
    assert order.status == "cancelled"
    attempt = order.call_attempts[0]
    assert (attempt.status, attempt.result, attempt.end_reason) == (
        "completed",
        "human",
        "participant_removed",
    )
    said = [t.content for t in attempt.transcript or [] if t.role != "tool"]
    assert said[:3] == [
        "Hello, it's about solar panels.",
        "Yes I'm interested, my email is ada@example.com",
        "Great, when would suit you for a demo?",
    ]


async def test_an_agent_whose_llm_fails_hangs_up_and_does_not_say_the_callee_did(
    fake_llm: FakeOpenAI,
) -> None:
    """The session closes on an unrecoverable error (the agent's LLM refuses its key): the call is the
    system's failure, not the callee's hang-up, and the line is not left open in silence."""
    fake_llm.say("Hello, it's about solar panels.")
    fake_llm.fail(401)
    control = RecordingControl()

    class Link:
        result: ConverseResult | None = None

        def start(self, on_cancel: Any) -> None:
            pass

        async def finish(self, result: ConverseResult) -> None:
            self.result = result

    link = Link()
    async with call(fake_llm, make_spec(), CallDeps(control=control, now=lambda: NOW)) as c:
        held = asyncio.create_task(hold_the_call(c.session, c.agent, link))  # type: ignore[arg-type]
        for turn in range(5):  # the session gives up after a few refused turns in a row
            if held.done():
                break
            with contextlib.suppress(Exception):
                await c.session.generate_reply(user_input=f"Hello? Who is this? ({turn})").wait_for_playout()
        result = await asyncio.wait_for(held, 20)
    assert (result.result, result.ended_by, result.end_reason) == ("human", "system", None)
    assert link.result == result and control.events == [("hang_up",)]


async def test_cancelling_the_order_makes_the_agent_say_goodbye_and_hang_up(
    dev_env: WorkflowEnvironment, task_queue: str, fake_llm: FakeOpenAI
) -> None:
    fake_llm.say("Hello, it's about solar panels.")
    async with agent_on_a_livekit_order(dev_env, task_queue, fake_llm) as (livekit, c, link, handle, held):
        await link.found()
        await handle.signal("cancel")
        result = await asyncio.wait_for(held, 20)  # the next heartbeat tells the agent
        order = await handle.result()
    assert (result.ended_by, result.end_reason) == ("system", "participant_removed")
    assert result.transcript[-1].content == "Bye now."  # said before hanging up
    assert [r.room for r in livekit.calls("DeleteRoom")] == [room_name(order.call_attempts[0].id)]
    assert order.status == "cancelled" and link.cancelled
    assert order.call_attempts[0].end_reason == "participant_removed"

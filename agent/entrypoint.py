"""The LiveKit job of one attempt: join its room, hold the conversation, report to Temporal.

Order of events: the dial activity dispatches this agent into room `outdial-<attempt id>` before it
rings, so the agent is listening (answering-machine detection included) when the callee picks up.
The dispatch metadata holds only ids; the assistant comes from the order's `call` query. The converse
activity is found and kept alive by `ConverseLink`; when the call ends (end_call, callee hangs up,
voicemail, max duration, cancelled order, transfer) the agent hangs up and completes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livekit.agents import AMD, AgentSession, BackgroundAudioPlayer, JobContext, room_io

from activities.livekit import CALLEE_IDENTITY, SIP_CALL_STATUS, DispatchMetadata
from activities.sms import sms_provider_from
from activities.url_guard import guarded_client
from agent import pipeline
from agent.call_agent import CallDeps, CallState, OutdialAgent, transcript_from
from agent.config import AgentConfig
from agent.control import LiveKitCallControl
from agent.reporter import ConverseLink
from models.settings import Settings
from workers.worker import connect

log = logging.getLogger(__name__)


async def entrypoint(ctx: JobContext) -> None:
    meta = DispatchMetadata.model_validate_json(ctx.job.metadata or "{}")
    settings = Settings.load()
    config = AgentConfig.from_env()
    client = await connect(settings)
    link = ConverseLink(client, meta.call_id, meta.attempt_id)
    spec = await link.call()
    assistant = spec.assistant
    await ctx.connect()
    try:  # the dial rings right after dispatching us; a failed dial never brings the callee
        async with asyncio.timeout(settings.livekit_ringing_timeout_secs + 30):
            callee = await ctx.wait_for_participant(identity=CALLEE_IDENTITY)
    except TimeoutError:
        log.info("attempt %s: the callee never joined (dial failed); leaving", meta.attempt_id)
        ctx.shutdown(reason="no callee")
        return
    answered = asyncio.Event()

    def on_attributes(changed: dict[str, str], participant: object) -> None:
        if (
            getattr(participant, "identity", None) == CALLEE_IDENTITY
            and changed.get(SIP_CALL_STATUS) == "active"
        ):
            answered.set()

    ctx.room.on("participant_attributes_changed", on_attributes)
    if callee.attributes.get(SIP_CALL_STATUS) == "active":
        answered.set()

    import httpx

    async with (
        guarded_client(allow_private=settings.allow_private_urls, timeout=config.http_timeout_secs) as http,
        httpx.AsyncClient(timeout=config.http_timeout_secs) as calendly_http,
    ):
        trunk = (
            settings.livekit_sip_trunks.get(spec.from_phone_number) or settings.livekit_sip_outbound_trunk_id
        )
        deps = CallDeps(
            control=LiveKitCallControl(ctx, trunk_id=trunk, from_phone_number=spec.from_phone_number),
            config=config,
            http=http,
            sms=sms_provider_from(settings) if assistant.sms_enabled else None,
            sms_from_phone_number=settings.sms_from_phone_number,
            calendly_http=calendly_http,
        )
        realtime = pipeline.is_realtime(assistant)
        session: AgentSession = AgentSession(
            llm=pipeline.build_llm(assistant, settings, config),
            **(
                {}
                if realtime
                else {
                    "stt": pipeline.build_stt(settings, config),
                    "tts": pipeline.build_tts(assistant.voice, settings, config),
                }
            ),
            **({"vad": vad} if (vad := pipeline.build_vad()) else {}),
            user_away_timeout=None,
        )
        state = CallState()
        agent = OutdialAgent(spec, deps, state)

        def on_close(_: object) -> None:
            state.end("user", "user_hangup", hang_up=False)

        session.on("close", on_close)
        amd = (
            AMD(session, llm=None, stt=None, ivr_detection=False, participant_identity=CALLEE_IDENTITY)
            if (config.amd_enabled and not realtime)
            else None
        )
        async with contextlib.AsyncExitStack() as stack:
            if amd is not None:
                await stack.enter_async_context(amd)
            await session.start(
                agent,
                room=ctx.room,
                room_options=room_io.RoomOptions(
                    participant_identity=CALLEE_IDENTITY, close_on_disconnect=True
                ),
            )
            sounds = pipeline.sound_options(assistant)
            if sounds:
                player = BackgroundAudioPlayer(**sounds)
                await player.start(room=ctx.room, agent_session=session)
                stack.push_async_callback(player.aclose)
            link.start(on_cancel=agent.cancel)

            async def detect() -> None:
                assert amd is not None
                verdict = await amd.execute()
                log.info("attempt %s: AMD %s (%s)", spec.attempt_id, verdict.category.value, verdict.reason)
                agent.on_answering_machine(verdict.category.value, verdict.transcript)

            detection = asyncio.create_task(detect()) if amd is not None else None
            await state.ended.wait()
            if detection is not None:
                detection.cancel()
        agent.close()
        transcript = transcript_from(session.history.items)
        result = state.converse_result(transcript)
        if state.hang_up:
            with contextlib.suppress(Exception):
                await deps.control.hang_up()
        with contextlib.suppress(RuntimeError):
            session.shutdown(drain=False)
        if answered.is_set():  # an unanswered ring has no converse activity to report to
            await link.finish(result)
        log.info(
            "attempt %s: %s (%s by %s)", spec.attempt_id, result.result, result.end_reason, result.ended_by
        )
    ctx.shutdown(reason=result.end_reason or "call ended")

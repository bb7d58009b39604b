"""The LiveKit job of one attempt: join its room, hold the conversation, report to Temporal.

Order of events: the dial activity dispatches this agent into room `outdial-<attempt id>` before it
rings; the session and answering-machine detection start while the phone rings (AMD listens from the
moment `sip.callStatus` is `active`), and the agent speaks only once the callee picked up. The
dispatch metadata holds only ids; the assistant comes from the order's `call` query. The converse
activity is found and kept alive by `ConverseLink`; when the call ends (end_call, callee hangs up,
voicemail, max duration, cancelled order, transfer) the agent hangs up and completes it with the
result, the transcript and the call's own answered/ended times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livekit.agents import (
    AMD,
    AgentSession,
    BackgroundAudioPlayer,
    CloseEvent,
    CloseReason,
    JobContext,
    room_io,
)

from activities.livekit import CALLEE_IDENTITY, SIP_CALL_STATUS, DispatchMetadata
from activities.sms import sms_provider_from
from activities.url_guard import guarded_client
from agent import pipeline
from agent.call_agent import CallDeps, CallState, OutdialAgent, transcript_from
from agent.config import AgentConfig
from agent.control import LiveKitCallControl
from agent.reporter import ConverseLink
from models.assistant import CallAssistant
from models.settings import Settings
from models.workflow_io import ConverseResult
from workers.worker import connect

log = logging.getLogger(__name__)


async def entrypoint(ctx: JobContext) -> None:
    meta = DispatchMetadata.model_validate_json(ctx.job.metadata or "{}")
    settings = Settings.load()
    config = AgentConfig.from_env().model_copy(update={"home_organization": settings.organization_id})
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
    state = CallState()

    def on_attributes(changed: dict[str, str], participant: object) -> None:
        if (
            getattr(participant, "identity", None) == CALLEE_IDENTITY
            and changed.get(SIP_CALL_STATUS) == "active"
        ):
            state.mark_answered()

    ctx.room.on("participant_attributes_changed", on_attributes)
    if callee.attributes.get(SIP_CALL_STATUS) == "active":
        state.mark_answered()

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
        session = pipeline.build_session(assistant, settings, config, spec.prompt_variables)
        agent = OutdialAgent(spec, deps, state)
        # The session starts while the phone rings; the agent speaks once the callee picks up.
        await session.start(
            agent,
            room=ctx.room,
            room_options=room_io.RoomOptions(participant_identity=CALLEE_IDENTITY, close_on_disconnect=True),
        )
        async with contextlib.AsyncExitStack() as stack:
            sounds = pipeline.sound_options(assistant)
            if sounds:
                player = BackgroundAudioPlayer(**sounds)
                await player.start(room=ctx.room, agent_session=session)
                stack.push_async_callback(player.aclose)
            result = await hold_the_call(session, agent, link, amd=build_amd(session, assistant, config))
    ctx.shutdown(reason=result.end_reason or "call ended")


def build_amd(session: AgentSession, assistant: CallAssistant, config: AgentConfig) -> AMD | None:
    """livekit-agents' answering-machine detection on the callee's greeting, classified by the session's
    own LLM and transcripts. Off for realtime models (no separate transcripts) or with OUTDIAL_AMD=0.
    Built once the session started: AMD then holds the agent's speech until its verdict and listens
    only from the moment the SIP leg is active (no ringback in the classification)."""
    if not config.amd_enabled or pipeline.is_realtime(assistant):
        return None
    return AMD(
        session,
        llm=None,
        stt=None,
        ivr_detection=False,  # the agent's own send_dtmf / skip_turn tools navigate menus
        participant_identity=CALLEE_IDENTITY,
        # silence past first_sentence_delay_ms and this: nobody speaks first, so the agent does
        detection_options={
            "no_speech_threshold": max(config.amd_no_speech_secs, assistant.first_sentence_delay_ms / 1000)
        },
    )


async def hold_the_call(
    session: AgentSession, agent: OutdialAgent, link: ConverseLink, *, amd: AMD | None = None
) -> ConverseResult:
    """From the ring to the hang-up: answering-machine detection, the conversation, the end (end_call,
    the callee hangs up, voicemail, max duration, a transfer, or the order's cancellation reported by
    `link`), then the converse activity is completed with the call's result and its own times."""
    state = agent.state

    def on_close(event: CloseEvent) -> None:
        if event.reason == CloseReason.ERROR:  # e.g. its LLM refused the key: ours to end, not the callee's
            log.error("attempt %s: the session failed (%s); hanging up", agent.spec.attempt_id, event.error)
            state.end("system", None)
        else:
            state.end("user", "client_initiated", hang_up=False)

    session.on("close", on_close)
    async with contextlib.AsyncExitStack() as stack:
        if amd is not None:
            await stack.enter_async_context(amd)
        link.start(on_cancel=agent.cancel)
        detection = asyncio.create_task(agent.listen_for_answering_machine(amd)) if amd else None
        try:
            await state.ended.wait()
        finally:
            if detection is not None:
                detection.cancel()
    agent.close()
    result = state.converse_result(transcript_from(session.history.items))
    if state.hang_up:
        await _hang_up(agent)
    with contextlib.suppress(RuntimeError):
        session.shutdown(drain=False)
    if state.answered.is_set():  # an unanswered ring has no converse activity to report to
        await link.finish(result)
    log.info(
        "attempt %s: %s (%s by %s)", agent.spec.attempt_id, result.result, result.end_reason, result.ended_by
    )
    return result


HANG_UP_PAUSES = (0.5, 1.0, 2.0, 4.0)  # between tries: LiveKit overloaded or restarting, for seconds


async def _hang_up(agent: OutdialAgent) -> None:
    """Hang up, asked again while it fails: one failed request left the callee on a silent line until
    they hung up or LiveKit's max call duration cut it (the order, told the call ended, does not)."""
    for pause in (*HANG_UP_PAUSES, None):
        try:
            await agent.deps.control.hang_up()
            return
        except Exception as err:  # noqa: BLE001 — any failure: the line may still be up
            if pause is None:
                log.error("attempt %s: could not hang up: %s", agent.spec.attempt_id, err)
                return
            log.warning("attempt %s: hang-up failed (%s); trying again", agent.spec.attempt_id, err)
            await asyncio.sleep(pause)

"""LiveKit telephony: `livekit-api` places the call, the `outdial voice-agent` process holds it.

dial (one room per attempt, never two rings)
    Room `outdial-<attempt id>`; an explicit dispatch of the voice agent (`livekit_agent_name`) whose
    metadata is only `{"call_id", "attempt_id"}` (no secret: the agent reads the assistant through the
    order's `call` query); then `CreateSIPParticipant` with `wait_until_answered`, a ringing timeout,
    `max_call_duration` and the caller id mapped to its outbound trunk. The room's metadata is the
    attempt's dial ledger (`created` -> `dialing` -> `answered` | `failed:<dial_error>`), written before
    and after the ring, and the activity's heartbeat details repeat it (they survive a retry even when
    the room is gone). A retried dial reads the ledger and never sends a second `CreateSIPParticipant`
    once `dialing` was written: it reports what the first ring became instead.

converse (asynchronous activity completion)
    The activity heartbeats its attempt id (so the agent can tell its converse from another) and calls
    `activity.raise_complete_async()`. The agent process finds the pending `converse` activity of
    workflow `call-<call id>` (DescribeWorkflowExecution), heartbeats it by id every few seconds and
    completes it with the ConverseResult when the call ends. Why not a task token in metadata: the
    agent needs no token at all (completion by id; the Temporal client's own credentials authorize it),
    so nothing credential-like ever sits in room or dispatch metadata. A dead agent stops heartbeating:
    the 30 s heartbeat timeout fails the attempt, and the retried converse finds no agent in the room,
    hangs up and returns `unknown` / `agent_lost`. Cancelling the order cancels converse; the agent
    learns it from its next heartbeat, says `end_of_call_sentence` and hangs up.

SIP status -> the seed's dial_error (SipCallError.sip_status_code first, then the Twirp code):

| SIP status                          | dial_error                  |
|-------------------------------------|-----------------------------|
| 486 Busy Here, 600 Busy Everywhere, 603 Decline | busy            |
| 408 Request Timeout, 487 Request Terminated (ringing timeout) | no_answer |
| 480 Temporarily Unavailable, 502, 503, 504 | temporarily_unavailable |
| 404, 410 Gone, 484 Address Incomplete, 485, 604 | number_non_attributed |
| 403 Forbidden, callee in another country than the caller id | no_international_permission |
| 403 Forbidden, same country         | precondition_failed         |
| 429 Too Many Requests (or Twirp `resource_exhausted` without SIP status) | too_many_calls |
| 401, 407, 412, 420, 421, 488, 606 (or Twirp `failed_precondition`/`not_found`) | precondition_failed |
| Twirp `deadline_exceeded` without SIP status | no_answer           |
| anything else                       | non_classified_error        |

Bad credentials (`unauthenticated`, `permission_denied` without SIP status) are a configuration error:
non-retryable, the order ends `errored`. 5xx and transport errors say nothing about the ring, so the
activity fails and its retry reads the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiohttp
import phonenumbers
from livekit import api
from pydantic import BaseModel, SecretStr, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import report_progress
from activities.providers import refuse_to_ring_late
from models.common import DialError
from models.settings import ConfigError, Settings
from models.workflow_io import ConverseRequest, ConverseResult, DialRequest, DialResult, HangUpRequest

log = logging.getLogger(__name__)

ROOM_PREFIX = "outdial-"
CALLEE_IDENTITY = "callee"
SIP_CALL_STATUS = "sip.callStatus"  # the attribute LiveKit sets on SIP participants
LIVEKIT_CONFIG_ERROR = "LiveKitConfigError"
ROOM_EMPTY_TIMEOUT_SECS = 120  # the agent joins within seconds; an abandoned room goes away by itself
ROOM_DEPARTURE_TIMEOUT_SECS = 30

SIP_STATUS_DIAL_ERRORS: dict[int, DialError] = {
    486: "busy",
    600: "busy",
    603: "busy",
    408: "no_answer",
    487: "no_answer",
    480: "temporarily_unavailable",
    502: "temporarily_unavailable",
    503: "temporarily_unavailable",
    504: "temporarily_unavailable",
    404: "number_non_attributed",
    410: "number_non_attributed",
    484: "number_non_attributed",
    485: "number_non_attributed",
    604: "number_non_attributed",
    429: "too_many_calls",
    401: "precondition_failed",
    407: "precondition_failed",
    412: "precondition_failed",
    420: "precondition_failed",
    421: "precondition_failed",
    488: "precondition_failed",
    606: "precondition_failed",
}
TWIRP_CODE_DIAL_ERRORS: dict[str, DialError] = {
    "resource_exhausted": "too_many_calls",
    "failed_precondition": "precondition_failed",
    "not_found": "precondition_failed",  # e.g. an unknown trunk id
    "deadline_exceeded": "no_answer",
}
CONFIG_ERROR_CODES = frozenset({"unauthenticated", "permission_denied"})


def room_name(attempt_id: str) -> str:
    """One LiveKit room per attempt: the attempt id is the idempotency key of the ring."""
    return f"{ROOM_PREFIX}{attempt_id}"


class DispatchMetadata(BaseModel):
    """What the agent dispatch carries: ids only; the agent reads the rest from the workflow."""

    call_id: str
    attempt_id: str


class DialLedger(BaseModel):
    """The room's metadata: how far this attempt's dial got."""

    attempt_id: str
    phase: Literal["created", "dialing", "answered", "failed"]
    dial_error: DialError | None = None


def dial_error_for(error: api.ServerError, *, to_number: str, from_number: str) -> DialError | None:
    """The seed's dial_error for a failed CreateSIPParticipant, None when the error says nothing about
    the ring (5xx without SIP status, config errors): see the module table."""
    code = error.sip_status_code if isinstance(error, api.SipCallError) else None
    if code is not None:
        if code == 403:
            return (
                "no_international_permission"
                if _countries_differ(to_number, from_number)
                else ("precondition_failed")
            )
        return SIP_STATUS_DIAL_ERRORS.get(code, "non_classified_error")
    if error.code in TWIRP_CODE_DIAL_ERRORS:
        return TWIRP_CODE_DIAL_ERRORS[error.code]
    if error.status >= 500 or error.code in CONFIG_ERROR_CODES:
        return None
    return "non_classified_error"


def _countries_differ(a: str, b: str) -> bool:
    try:
        return phonenumbers.parse(a).country_code != phonenumbers.parse(b).country_code
    except phonenumbers.NumberParseException:
        return False


def _secret(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _previous_phase() -> str | None:
    """The dial phase a previous try of this activity reported, if any (survives the room)."""
    with contextlib.suppress(RuntimeError):
        details = activity.info().heartbeat_details
        if details and isinstance(details[0], str):
            return details[0]
    return None


class LiveKitTelephony:
    """The Telephony protocol over a LiveKit project with an outbound SIP trunk."""

    name = "livekit"

    def __init__(self, settings: Settings, *, answer_poll_interval: float = 1.0) -> None:
        if not (settings.livekit_url and settings.livekit_api_key and _secret(settings.livekit_api_secret)):
            raise ConfigError(
                "OUTDIAL_TELEPHONY=livekit needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        self.settings = settings
        self._answer_poll_interval = answer_poll_interval

    @contextlib.asynccontextmanager
    async def _api(self, timeout: float = 15) -> AsyncIterator[api.LiveKitAPI]:
        async with api.LiveKitAPI(
            self.settings.livekit_url,
            self.settings.livekit_api_key,
            _secret(self.settings.livekit_api_secret),
            timeout=aiohttp.ClientTimeout(total=timeout),
            # livekit-api would send a request again to another region of a *.livekit.cloud URL after a
            # 5xx or a lost connection: a CreateSIPParticipant twice rings the phone twice. The activity
            # fails instead, and its retry reads the ledger first.
            failover=False,
        ) as lk:
            yield lk

    def trunk_for(self, from_number: str) -> str:
        """The outbound trunk of a caller id the order did not resolve (its phone-number record has
        none): LIVEKIT_SIP_TRUNKS, else the default trunk."""
        trunk = (
            self.settings.livekit_sip_trunks.get(from_number) or self.settings.livekit_sip_outbound_trunk_id
        )
        if not trunk:
            raise ApplicationError(
                f"no LiveKit outbound SIP trunk for caller id {from_number}: set LIVEKIT_SIP_TRUNKS "
                "or LIVEKIT_SIP_OUTBOUND_TRUNK_ID",
                type=LIVEKIT_CONFIG_ERROR,
                non_retryable=True,
            )
        return trunk

    # -- dial -----------------------------------------------------------------------------------------

    async def dial(self, request: DialRequest) -> DialResult:
        room = room_name(request.attempt_id)
        trunk = request.livekit_outbound_trunk_id or self.trunk_for(request.from_phone_number)
        try:
            return await self._dial(room, trunk, request)
        except api.ServerError as err:
            if err.code in CONFIG_ERROR_CODES:  # a bad API key or secret: no retry can fix it
                raise ApplicationError(
                    f"LiveKit refused the request: {err}", type=LIVEKIT_CONFIG_ERROR, non_retryable=True
                ) from None
            raise

    async def _dial(self, room: str, trunk: str, request: DialRequest) -> DialResult:
        async with self._api() as lk:
            ledger = await self._read_ledger(lk, room)
            previous = _previous_phase()
            if ledger is None and previous and previous.startswith("failed:"):
                return DialResult(answered=False, dial_error=previous.removeprefix("failed:"))  # type: ignore[arg-type]
            if ledger is None and previous in ("dialing", "answered"):
                # The ring happened in an earlier try and its room is gone: never ring again.
                return DialResult(answered=False, dial_error="non_classified_error")
            if ledger is not None and ledger.phase == "answered":
                return DialResult(answered=True, session=room)
            if ledger is not None and ledger.phase == "failed":
                return DialResult(answered=False, dial_error=ledger.dial_error or "non_classified_error")
            if ledger is not None and ledger.phase == "dialing":
                return await self._outcome_of_earlier_ring(lk, room, request)
            refuse_to_ring_late(request)  # none rang for this attempt: a ring now would be a fresh one
            if ledger is None:
                await lk.room.create_room(
                    api.CreateRoomRequest(
                        name=room,
                        empty_timeout=ROOM_EMPTY_TIMEOUT_SECS,
                        departure_timeout=ROOM_DEPARTURE_TIMEOUT_SECS,
                        metadata=DialLedger(attempt_id=request.attempt_id, phase="created").model_dump_json(),
                    )
                )
            await self._ensure_dispatch(lk, room, request)
            await self._write_ledger(lk, room, DialLedger(attempt_id=request.attempt_id, phase="dialing"))
        report_progress("dialing")
        return await self._ring(room, trunk, request)

    async def _ring(self, room: str, trunk: str, request: DialRequest) -> DialResult:
        ringing = self.settings.livekit_ringing_timeout_secs
        sip = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk,
            sip_call_to=request.to_phone_number,
            sip_number=request.from_phone_number,
            room_name=room,
            participant_identity=CALLEE_IDENTITY,
            participant_name=request.to_phone_number,
            participant_attributes={
                "outdial.call_id": request.call_id,
                "outdial.attempt_id": request.attempt_id,
            },
            wait_until_answered=True,
            ringing_timeout=_duration(ringing),
        )
        if request.max_call_duration_secs:
            sip.max_call_duration.CopyFrom(_duration(request.max_call_duration_secs))
        keepalive = asyncio.create_task(self._keep_heartbeating("dialing"))
        try:
            async with self._api(timeout=ringing + 10) as lk:
                try:
                    await lk.sip.create_sip_participant(sip)
                except api.ServerError as err:
                    dial_error = dial_error_for(
                        err, to_number=request.to_phone_number, from_number=request.from_phone_number
                    )
                    if dial_error is None and err.code in CONFIG_ERROR_CODES:
                        await self._fail(lk, room, request, "non_classified_error")
                        raise ApplicationError(
                            f"LiveKit refused the call: {err}", type=LIVEKIT_CONFIG_ERROR, non_retryable=True
                        ) from None
                    if dial_error is None:
                        raise  # says nothing about the ring: the retry reads the ledger
                    log.info("attempt %s: dial failed: %s -> %s", request.attempt_id, err, dial_error)
                    await self._fail(lk, room, request, dial_error)
                    return DialResult(answered=False, dial_error=dial_error)
                answered_at = datetime.now(UTC)  # wait_until_answered: the callee just picked up
                await self._write_ledger(
                    lk, room, DialLedger(attempt_id=request.attempt_id, phase="answered")
                )
        except asyncio.CancelledError:  # the order was cancelled while ringing: hang up
            with contextlib.suppress(Exception):
                await asyncio.shield(self.hang_up(room))
            raise
        finally:
            keepalive.cancel()
        report_progress("answered")
        return DialResult(answered=True, session=room, answered_at=answered_at)

    async def _outcome_of_earlier_ring(
        self, lk: api.LiveKitAPI, room: str, request: DialRequest
    ) -> DialResult:
        """An earlier try rang and then lost its answer: watch the callee instead of ringing again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.livekit_ringing_timeout_secs + 5
        while True:
            status = await self._callee_status(lk, room)
            if status == "active":
                await self._write_ledger(
                    lk, room, DialLedger(attempt_id=request.attempt_id, phase="answered")
                )
                return DialResult(answered=True, session=room)
            if status is None or status == "hangup" or loop.time() > deadline:
                log.warning(
                    "attempt %s: an earlier dial lost its outcome; not ringing again", request.attempt_id
                )
                await self._fail(lk, room, request, "non_classified_error")
                return DialResult(answered=False, dial_error="non_classified_error")
            report_progress("dialing")
            await asyncio.sleep(self._answer_poll_interval)

    async def _callee_status(self, lk: api.LiveKitAPI, room: str) -> str | None:
        participants = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        for participant in participants.participants:
            if participant.identity == CALLEE_IDENTITY:
                return participant.attributes.get(SIP_CALL_STATUS, "dialing")
        return None

    async def _keep_heartbeating(self, phase: str) -> None:
        """Heartbeats let Temporal deliver a cancellation while the phone rings."""
        while True:
            await asyncio.sleep(5)
            report_progress(phase)

    async def _ensure_dispatch(self, lk: api.LiveKitAPI, room: str, request: DialRequest) -> None:
        agent_name = self.settings.livekit_agent_name
        existing = await lk.agent_dispatch.list_dispatch(room)
        if any(d.agent_name == agent_name for d in existing):
            return
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent_name,
                room=room,
                metadata=DispatchMetadata(
                    call_id=request.call_id, attempt_id=request.attempt_id
                ).model_dump_json(),
            )
        )

    async def _read_ledger(self, lk: api.LiveKitAPI, room: str) -> DialLedger | None:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        found = next((r for r in rooms.rooms if r.name == room), None)
        if found is None:
            return None
        try:
            return DialLedger.model_validate_json(found.metadata or "{}")
        except ValidationError:
            return DialLedger(attempt_id="", phase="dialing")  # unreadable: assume the worst, never re-ring

    async def _write_ledger(self, lk: api.LiveKitAPI, room: str, ledger: DialLedger) -> None:
        await lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=room, metadata=ledger.model_dump_json())
        )

    async def _fail(self, lk: api.LiveKitAPI, room: str, request: DialRequest, dial_error: DialError) -> None:
        ledger = DialLedger(attempt_id=request.attempt_id, phase="failed", dial_error=dial_error)
        with contextlib.suppress(api.ServerError, aiohttp.ClientError):
            await self._write_ledger(lk, room, ledger)
        report_progress(f"failed:{dial_error}")

    async def end_call(self, request: HangUpRequest) -> None:
        await self.hang_up(request.session or room_name(request.attempt_id))

    async def hang_up(self, room: str) -> None:
        """End the call for everyone: deleting the room disconnects the SIP leg and the agent."""
        async with self._api() as lk:
            try:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            except api.ServerError as err:
                if err.code != "not_found":
                    raise

    # -- converse -------------------------------------------------------------------------------------

    async def converse(self, request: ConverseRequest) -> ConverseResult:
        """Hand the conversation to the agent process, which completes this activity by id."""
        room = request.session or room_name(request.attempt_id)
        info = activity.info()
        activity.heartbeat(request.attempt_id)  # how the agent recognizes the converse of its attempt
        if info.attempt > 1 and not await self._agent_present(room):
            log.warning("attempt %s: the voice agent is gone; hanging up", request.attempt_id)
            await self.hang_up(room)
            return ConverseResult(result="unknown", ended_by="system")  # the agent is gone: no reason known
        activity.raise_complete_async()

    async def _agent_present(self, room: str) -> bool:
        async with self._api() as lk:
            try:
                participants = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            except api.ServerError as err:
                if err.code == "not_found":
                    return False
                raise
        agent_kind = api.ParticipantInfo.Kind.AGENT
        return any(
            p.kind == agent_kind and p.state != api.ParticipantInfo.State.DISCONNECTED
            for p in participants.participants
        )


def _duration(seconds: float):  # type: ignore[no-untyped-def]
    """A protobuf Duration (google.protobuf) for `seconds`."""
    from google.protobuf.duration_pb2 import Duration

    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration

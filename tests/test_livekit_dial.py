"""LiveKit dialing with the real `livekit-api` client against a local server that speaks its protocol.

`FakeLiveKit` answers `POST /twirp/livekit.<Service>/<Method>` with protobuf bodies and Twirp JSON
errors (`{"code","msg","meta"}`, `meta.sip_status_code` for SIP failures), keeps rooms, participants
and dispatches, and records every request it parsed. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from livekit import api
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models as models_pb
from livekit.protocol import room as room_pb
from livekit.protocol import sip as sip_pb
from temporalio import workflow
from temporalio.activity import ActivityCancellationDetails
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.calls import CallActivities
from activities.livekit import CALLEE_IDENTITY, LiveKitTelephony, room_name
from activities.persistence import CallerId, caller_ids, resolve_caller_id
from activities.providers import DIAL_TOO_LATE
from activities.simulated import SimulatedAnalyzer
from agent.reporter import ConverseLink
from api.auth import seed_dev_organization
from models import Call, CallCreateParams
from models.settings import ConfigError, Settings
from models.tables import Database
from models.workflow_io import ConverseRequest, ConverseResult, DialRequest, DialResult
from tests.helpers import activity_started_at, eventually, settings_for_tests
from workers.worker import draining

API_KEY = "devkey"
API_SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
TO = "+33612345678"
FROM = "+33159000000"

REQUEST_TYPES = {
    ("RoomService", "CreateRoom"): room_pb.CreateRoomRequest,
    ("RoomService", "ListRooms"): room_pb.ListRoomsRequest,
    ("RoomService", "DeleteRoom"): room_pb.DeleteRoomRequest,
    ("RoomService", "UpdateRoomMetadata"): room_pb.UpdateRoomMetadataRequest,
    ("RoomService", "ListParticipants"): room_pb.ListParticipantsRequest,
    ("RoomService", "RemoveParticipant"): room_pb.RoomParticipantIdentity,
    ("AgentDispatchService", "CreateDispatch"): dispatch_pb.CreateAgentDispatchRequest,
    ("AgentDispatchService", "ListDispatch"): dispatch_pb.ListAgentDispatchRequest,
    ("SIP", "CreateSIPParticipant"): sip_pb.CreateSIPParticipantRequest,
    ("SIP", "TransferSIPParticipant"): sip_pb.TransferSIPParticipantRequest,
}


@dataclass
class SipOutcome:
    """How the fake answers CreateSIPParticipant: answered, or a Twirp error (after ringing or not)."""

    http_status: int = 200
    code: str = ""
    sip_status_code: int | None = None
    rings: bool = True  # the callee's phone rang (a SIP participant existed)
    callee_stays: bool = True  # after an error: the callee is still in the room, answered
    delete_room: bool = False  # after an error: the room is gone
    ring_seconds: float = 0  # how long the phone rings before LiveKit answers the request

    @classmethod
    def sip_error(cls, sip_status_code: int, http_status: int = 429, code: str = "resource_exhausted"):  # type: ignore[no-untyped-def]
        return cls(http_status, code, sip_status_code, callee_stays=False)


@dataclass
class FakeLiveKit:
    """A LiveKit server's Twirp API, in memory."""

    requests: list[tuple[str, str, object, dict[str, str]]] = field(default_factory=list)
    rooms: dict[str, models_pb.Room] = field(default_factory=dict)
    participants: dict[str, list[models_pb.ParticipantInfo]] = field(default_factory=dict)
    dispatches: dict[str, list[dispatch_pb.AgentDispatch]] = field(default_factory=dict)
    sip_outcome: SipOutcome = field(default_factory=SipOutcome)
    transfer_error: tuple[int, str, int] | None = (
        None  # (http status, code, sip status) for TransferSIPParticipant
    )
    url: str = ""
    on_request: Callable[[str, str, object], None] | None = None
    rang: asyncio.Event = field(default_factory=asyncio.Event)
    # (n, seconds): the n-th ListRooms is slow, then fails (503): LiveKit overloaded on a retry's read
    slow_list_rooms: tuple[int, float] | None = None

    def calls(self, method: str) -> list[object]:
        return [req for _, m, req, _ in self.requests if m == method]

    def methods(self) -> list[str]:
        return [m for _, m, _, _ in self.requests]

    def add_agent(self, room: str) -> None:
        self.participants.setdefault(room, []).append(
            models_pb.ParticipantInfo(
                identity="agent-AJ_1",
                kind=models_pb.ParticipantInfo.Kind.AGENT,
                state=models_pb.ParticipantInfo.State.ACTIVE,
            )
        )

    async def handle(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        body = await request.read()
        kind = REQUEST_TYPES.get((service, method))
        if kind is None:
            return _twirp_error(404, "bad_route", f"no handler for {service}/{method}")
        message = kind.FromString(body)
        try:  # as a LiveKit server: every request carries a token signed with the project's secret
            api.TokenVerifier(API_KEY, API_SECRET).verify(
                request.headers["Authorization"].removeprefix("Bearer ")
            )
        except Exception:  # noqa: BLE001 — a missing, malformed or badly signed token alike
            return _twirp_error(401, "unauthenticated", "invalid token: InvalidSignatureError")
        self.requests.append((service, method, message, dict(request.headers)))
        if self.on_request:
            self.on_request(service, method, message)
        if method == "ListRooms" and self.slow_list_rooms:
            nth, seconds = self.slow_list_rooms
            if self.methods().count("ListRooms") == nth:
                await asyncio.sleep(seconds)
                return _twirp_error(503, "unavailable", "overloaded")
        if method == "CreateSIPParticipant" and self.sip_outcome.ring_seconds:
            self.rang.set()
            await asyncio.sleep(self.sip_outcome.ring_seconds)  # the ring's real duration
        return getattr(self, f"_{method}")(message)

    def _CreateRoom(self, req: room_pb.CreateRoomRequest) -> web.Response:
        room = self.rooms.setdefault(
            req.name, models_pb.Room(name=req.name, sid=f"RM_{req.name}", metadata=req.metadata)
        )
        return _ok(room)

    def _ListRooms(self, req: room_pb.ListRoomsRequest) -> web.Response:
        rooms = [r for name, r in self.rooms.items() if not req.names or name in req.names]
        return _ok(room_pb.ListRoomsResponse(rooms=rooms))

    def _DeleteRoom(self, req: room_pb.DeleteRoomRequest) -> web.Response:
        if self.rooms.pop(req.room, None) is None:
            return _twirp_error(404, "not_found", "room not found")
        self.participants.pop(req.room, None)
        return _ok(room_pb.DeleteRoomResponse())

    def _UpdateRoomMetadata(self, req: room_pb.UpdateRoomMetadataRequest) -> web.Response:
        if req.room not in self.rooms:
            return _twirp_error(404, "not_found", "room not found")
        self.rooms[req.room].metadata = req.metadata
        return _ok(self.rooms[req.room])

    def _ListParticipants(self, req: room_pb.ListParticipantsRequest) -> web.Response:
        if req.room not in self.rooms:
            return _twirp_error(404, "not_found", "room not found")
        return _ok(room_pb.ListParticipantsResponse(participants=self.participants.get(req.room, [])))

    def _RemoveParticipant(self, req: room_pb.RoomParticipantIdentity) -> web.Response:
        people = self.participants.get(req.room, [])
        self.participants[req.room] = [p for p in people if p.identity != req.identity]
        return _ok(room_pb.RemoveParticipantResponse())

    def _CreateDispatch(self, req: dispatch_pb.CreateAgentDispatchRequest) -> web.Response:
        made = dispatch_pb.AgentDispatch(
            id=f"AD_{uuid.uuid4().hex[:8]}", agent_name=req.agent_name, room=req.room, metadata=req.metadata
        )
        self.dispatches.setdefault(req.room, []).append(made)
        return _ok(made)

    def _ListDispatch(self, req: dispatch_pb.ListAgentDispatchRequest) -> web.Response:
        return _ok(dispatch_pb.ListAgentDispatchResponse(agent_dispatches=self.dispatches.get(req.room, [])))

    def _CreateSIPParticipant(self, req: sip_pb.CreateSIPParticipantRequest) -> web.Response:
        outcome = self.sip_outcome
        self.rang.set()
        if req.room_name not in self.rooms:
            return _twirp_error(404, "not_found", "room not found")
        callee = models_pb.ParticipantInfo(
            identity=req.participant_identity,
            kind=models_pb.ParticipantInfo.Kind.SIP,
            state=models_pb.ParticipantInfo.State.ACTIVE,
            attributes={"sip.callStatus": "active"},
        )
        if outcome.http_status == 200:
            self.participants.setdefault(req.room_name, []).append(callee)
            return _ok(
                sip_pb.SIPParticipantInfo(
                    participant_identity=req.participant_identity, room_name=req.room_name
                )
            )
        if outcome.rings and outcome.callee_stays:
            self.participants.setdefault(req.room_name, []).append(callee)
        if outcome.delete_room:
            self.rooms.pop(req.room_name, None)
        meta = (
            {"sip_status_code": str(outcome.sip_status_code), "sip_status": "status"}
            if outcome.sip_status_code
            else {}
        )
        return _twirp_error(outcome.http_status, outcome.code, "call failed", meta)

    def _TransferSIPParticipant(self, req: sip_pb.TransferSIPParticipantRequest) -> web.Response:
        if self.transfer_error:
            status, code, sip_code = self.transfer_error
            return _twirp_error(status, code, "transfer failed", {"sip_status_code": str(sip_code)})
        return _ok(sip_pb.TransferSIPParticipantResponse())


def _ok(message: object) -> web.Response:
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")  # type: ignore[attr-defined]


def _twirp_error(status: int, code: str, msg: str, meta: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "meta": meta or {}}, status=status)


@contextlib.asynccontextmanager
async def running_livekit() -> AsyncIterator[FakeLiveKit]:
    """A FakeLiveKit served on 127.0.0.1 (an ephemeral port)."""
    fake = FakeLiveKit()
    app = web.Application()
    app.router.add_post("/twirp/livekit.{service}/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    async with running_livekit() as fake:
        yield fake


def livekit_settings(fake: FakeLiveKit, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = dict(
        telephony="livekit",
        livekit_url=fake.url,
        livekit_api_key=API_KEY,
        livekit_api_secret=API_SECRET,
        livekit_sip_outbound_trunk_id="ST_default",
        livekit_sip_trunks={FROM: "ST_paris"},
        livekit_ringing_timeout_secs=25,
    )
    return settings_for_tests(**(values | overrides))


def dial_request(attempt_id: str | None = None, **overrides: object) -> DialRequest:
    values: dict[str, object] = dict(
        call_id="c0ffee00-0000-4000-8000-000000000001",
        attempt_id=attempt_id or str(uuid.uuid4()),
        attempt_number=1,
        to_phone_number=TO,
        from_phone_number=FROM,
        max_call_duration_secs=300,
    )
    return DialRequest.model_validate(values | overrides)


# -- the exact requests -------------------------------------------------------------------------------


async def test_dial_sends_room_dispatch_and_sip_participant(livekit: FakeLiveKit) -> None:
    telephony = LiveKitTelephony(livekit_settings(livekit))
    request = dial_request()
    room = room_name(request.attempt_id)

    before = datetime.now(UTC)
    result = await telephony.dial(request)

    assert result.answered and result.session == room
    assert before <= result.answered_at <= datetime.now(UTC)  # type: ignore[operator]  # the ring's answer
    assert livekit.methods() == [
        "ListRooms",
        "CreateRoom",
        "ListDispatch",
        "CreateDispatch",
        "UpdateRoomMetadata",
        "CreateSIPParticipant",
        "UpdateRoomMetadata",
    ]
    create_room = livekit.calls("CreateRoom")[0]
    assert create_room.name == room and create_room.empty_timeout > 0
    dispatch = livekit.calls("CreateDispatch")[0]
    assert dispatch.agent_name == "outdial-agent" and dispatch.room == room
    # Only ids travel with the dispatch: no prompt, no keys.
    assert dispatch.metadata == (f'{{"call_id":"{request.call_id}","attempt_id":"{request.attempt_id}"}}')
    sip = livekit.calls("CreateSIPParticipant")[0]
    assert sip.sip_trunk_id == "ST_paris"  # the from-number's own trunk, not the default
    assert sip.sip_call_to == TO and sip.sip_number == FROM
    assert sip.room_name == room and sip.participant_identity == CALLEE_IDENTITY
    assert sip.wait_until_answered is True
    assert sip.ringing_timeout.seconds == 25
    assert sip.max_call_duration.seconds == 300
    assert sip.participant_attributes["outdial.attempt_id"] == request.attempt_id
    assert '"phase":"answered"' in livekit.rooms[room].metadata
    # Every request is signed with the project's key; SIP dialing carries the sip.call grant.
    headers = next(h for _, m, _, h in livekit.requests if m == "CreateSIPParticipant")
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(headers["Authorization"].removeprefix("Bearer "))
    assert claims.sip is not None and claims.sip.call is True


async def test_unknown_caller_id_uses_the_default_trunk(livekit: FakeLiveKit) -> None:
    telephony = LiveKitTelephony(livekit_settings(livekit))
    await telephony.dial(dial_request(from_phone_number="+14155550100"))
    assert livekit.calls("CreateSIPParticipant")[0].sip_trunk_id == "ST_default"


async def test_a_trunk_per_number_is_found_however_its_number_was_written(livekit: FakeLiveKit) -> None:
    """LIVEKIT_SIP_TRUNKS' keys as written (`+330159...`, spaces) never matched a caller id, stored as
    E.164 writes it: those calls took the default trunk, which does not own their number."""
    trunks = {"+33 1 59 00 00 05": "ST_spaced", "+330159000006": "ST_trunk0"}
    settings = Settings.load(
        config_file="/nonexistent",
        env={
            "LIVEKIT_SIP_TRUNKS": ",".join(f"{k}={v}" for k, v in trunks.items()),
            "LIVEKIT_URL": livekit.url,
        },
    )
    telephony = LiveKitTelephony(livekit_settings(livekit, livekit_sip_trunks=settings.livekit_sip_trunks))
    for caller in ("+33159000005", "+33159000006"):
        await telephony.dial(dial_request(from_phone_number=caller))
    assert [sip.sip_trunk_id for sip in livekit.calls("CreateSIPParticipant")] == ["ST_spaced", "ST_trunk0"]
    for wrong, error in (
        ("+33=ST_a", "'\\+33' is not a phone number"),
        ("+33159000005=ST_a,+330159000005=ST_b", "twice"),
    ):
        with pytest.raises(ConfigError, match=f"LIVEKIT_SIP_TRUNKS: .*{error}"):
            Settings.load(config_file="/nonexistent", env={"LIVEKIT_SIP_TRUNKS": wrong})


def test_the_organizations_number_is_read_as_e164_writes_it(tmp_path: Path) -> None:
    """Kept as written, `+33 1 59 00 00 00` was dialled as such, and no order could name it."""
    config = tmp_path / "temporal-dev.yaml"
    config.write_text('organization:\n  default_from_phone_number: "+33 (0)1 59 00 00 00"\n')
    assert Settings.load(config_file=config, env={}).default_from_phone_number == "+33159000000"
    config.write_text('organization:\n  default_from_phone_number: "+1 555 555 0100"\n')  # fictional: kept
    assert Settings.load(config_file=config, env={}).default_from_phone_number == "+15555550100"
    real = {"OUTDIAL_TELEPHONY": "livekit"}  # ... for simulated callees; real ones need an assigned one
    with pytest.raises(
        ConfigError, match="organization.default_from_phone_number: .*not a valid phone number"
    ):
        Settings.load(config_file=config, env=real)
    with pytest.raises(
        ConfigError, match="LIVEKIT_SIP_TRUNKS: .*'\\+3315900000' is not a valid"
    ):  # a digit short
        Settings.load(config_file="/nonexistent", env={**real, "LIVEKIT_SIP_TRUNKS": "+33 1 59 00 00 0=ST_a"})
    config.write_text('organization:\n  default_from_phone_number: "+33 1"\n')
    with pytest.raises(ConfigError, match="organization.default_from_phone_number: .*not a phone number"):
        Settings.load(config_file=config, env={})


async def test_no_trunk_at_all_is_a_configuration_error(livekit: FakeLiveKit) -> None:
    telephony = LiveKitTelephony(livekit_settings(livekit, livekit_sip_outbound_trunk_id=None))
    with pytest.raises(Exception, match="no LiveKit outbound SIP trunk"):
        await telephony.dial(dial_request(from_phone_number="+14155550100"))
    assert livekit.calls("CreateSIPParticipant") == []


# -- dial_error mapping --------------------------------------------------------------------------------

MAPPINGS = [
    # (http status, twirp code, sip status, to number, expected dial_error)
    (429, "resource_exhausted", 486, TO, "busy"),  # real servers send busy as resource_exhausted
    (429, "resource_exhausted", 600, TO, "busy"),
    (403, "permission_denied", 603, TO, "busy"),  # the callee declined
    (504, "deadline_exceeded", 408, TO, "no_answer"),
    (400, "canceled", 487, TO, "no_answer"),
    (429, "resource_exhausted", 480, TO, "temporarily_unavailable"),
    (412, "failed_precondition", 503, TO, "temporarily_unavailable"),
    (404, "not_found", 404, TO, "number_non_attributed"),
    (404, "not_found", 604, TO, "number_non_attributed"),
    (400, "invalid_argument", 484, TO, "number_non_attributed"),
    (403, "permission_denied", 403, "+14155550100", "no_international_permission"),
    (403, "permission_denied", 403, TO, "precondition_failed"),  # same country: not about borders
    (429, "resource_exhausted", 429, TO, "too_many_calls"),
    (429, "resource_exhausted", None, TO, "too_many_calls"),  # LiveKit's own concurrency limit
    (412, "failed_precondition", 488, TO, "precondition_failed"),
    (412, "failed_precondition", None, TO, "precondition_failed"),
    (504, "deadline_exceeded", None, TO, "no_answer"),
    (412, "failed_precondition", 500, TO, "non_classified_error"),
    (400, "unknown", 499, TO, "non_classified_error"),
]


@pytest.mark.parametrize(("http_status", "code", "sip_status", "to", "expected"), MAPPINGS)
async def test_sip_failures_map_to_dial_errors(
    livekit: FakeLiveKit, http_status: int, code: str, sip_status: int | None, to: str, expected: str
) -> None:
    livekit.sip_outcome = SipOutcome(http_status, code, sip_status, callee_stays=False)
    telephony = LiveKitTelephony(livekit_settings(livekit))
    request = dial_request(to_phone_number=to)

    result = await telephony.dial(request)

    assert result == DialResult(answered=False, dial_error=expected)
    # The failure is on the ledger: dialing the same attempt again answers from it, without a ring.
    assert await telephony.dial(request) == result
    assert len(livekit.calls("CreateSIPParticipant")) == 1


async def test_bad_credentials_fail_the_order_without_retrying(livekit: FakeLiveKit) -> None:
    livekit.sip_outcome = SipOutcome(401, "unauthenticated", None, rings=False)
    telephony = LiveKitTelephony(livekit_settings(livekit))
    with pytest.raises(Exception, match="LiveKit refused the call") as raised:
        await telephony.dial(dial_request())
    assert getattr(raised.value, "non_retryable", False) is True


@pytest.mark.parametrize("wrong", ["livekit_api_key", "livekit_api_secret"])
async def test_a_wrong_api_key_or_secret_fails_the_dial_at_once(livekit: FakeLiveKit, wrong: str) -> None:
    """Refused on the dial's first request (reading its ledger), not only when it rings: retried, it was
    tried three times per attempt and the order went on for hours, then ended as if called."""
    telephony = LiveKitTelephony(livekit_settings(livekit, **{wrong: "not-the-project's"}))
    with pytest.raises(Exception, match="LiveKit refused the request") as raised:
        await telephony.dial(dial_request())
    assert getattr(raised.value, "non_retryable", False) is True
    assert livekit.requests == []  # refused, each one: nothing was done, nothing rang


@pytest.mark.parametrize("url", ["127.0.0.1:7880", "project.livekit.cloud", "wss:/project.livekit.cloud"])
def test_a_livekit_url_without_its_scheme_is_refused_with_the_settings(url: str) -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_URL: .*must start with wss://"):
        Settings.load(config_file="/nonexistent", env={"LIVEKIT_URL": url})
    assert Settings.load(config_file="/nonexistent", env={"LIVEKIT_URL": "wss://p.livekit.cloud"}).livekit_url


def test_the_local_stacks_configured_number_and_trunk_are_what_orders_dial_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a demo (its simulated number, no trunk), `outdial dev` with the trunk's own number: that
    number dials, on the trunk configured last (a mistyped one, corrected). Before, the demo's number
    stayed the default (the oldest), and the first trunk recorded stayed for good."""
    monkeypatch.chdir(tmp_path)  # the dev API key is kept in ./.outdial
    demo = settings_for_tests()
    seed_dev_organization(demo)
    number = "+14155550100"  # the trunk's own
    mistyped = demo.model_copy(
        update={"default_from_phone_number": number, "livekit_sip_outbound_trunk_id": "ST_typo"}
    )
    seed_dev_organization(mistyped)
    seed_dev_organization(mistyped.model_copy(update={"livekit_sip_outbound_trunk_id": "ST_mine"}))
    owned = caller_ids(Database.for_url(demo.database_url), demo.organization_id)
    assert resolve_caller_id(owned, None, number) == CallerId(number, "ST_mine")
    assert resolve_caller_id(owned, FROM, number) == CallerId(FROM, None)  # the demo's, still owned


# -- never ring twice ----------------------------------------------------------------------------------


async def _dial_with_retries(request: DialRequest, heartbeat_timeout: timedelta | None = None) -> DialResult:
    return await workflow.execute_activity(
        "dial",
        request,
        result_type=DialResult,
        start_to_close_timeout=timedelta(seconds=60),
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=3),
    )


@workflow.defn(sandboxed=False)
class DialOnce:
    """Runs only the dial activity, with retries, as CallOrderWorkflow does."""

    @workflow.run
    async def run(self, request: DialRequest) -> DialResult:
        return await _dial_with_retries(request)


@workflow.defn(sandboxed=False)
class DialWithHeartbeats:
    """DialOnce with a heartbeat timeout, as the order's dial has (shorter, for a short ring)."""

    @workflow.run
    async def run(self, request: DialRequest) -> DialResult:
        return await _dial_with_retries(request, timedelta(seconds=1.5))  # a keep-alive every 0.5 s


async def _dial_through_temporal(
    env: WorkflowEnvironment,
    fake: FakeLiveKit,
    request: DialRequest,
    dialling: type[DialOnce] | type[DialWithHeartbeats] = DialOnce,
) -> DialResult:
    settings = livekit_settings(fake)
    calls = CallActivities(
        settings, LiveKitTelephony(settings, answer_poll_interval=0.05), SimulatedAnalyzer()
    )
    queue = f"dial-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[dialling], activities=[calls.dial]):
        return await env.client.execute_workflow(
            dialling.run, request, id=f"dial-{uuid.uuid4()}", task_queue=queue, result_type=DialResult
        )


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        # The phone rang and was answered, but the answer was lost (5xx): the retry finds the callee.
        (SipOutcome(503, "unavailable", None), DialResult(answered=True)),
        # Lost answer and the callee already gone: report an unclassified failure, never ring again.
        (
            SipOutcome(503, "unavailable", None, callee_stays=False),
            DialResult(answered=False, dial_error="non_classified_error"),
        ),
        # Lost answer and the room gone too: the heartbeat details remember the ring.
        (
            SipOutcome(503, "unavailable", None, callee_stays=False, delete_room=True),
            DialResult(answered=False, dial_error="non_classified_error"),
        ),
    ],
)
async def test_a_retried_dial_never_rings_twice(
    time_env: WorkflowEnvironment, livekit: FakeLiveKit, outcome: SipOutcome, expected: DialResult
) -> None:
    livekit.sip_outcome = outcome
    request = dial_request()

    result = await _dial_through_temporal(time_env, livekit, request)

    assert len(livekit.calls("CreateSIPParticipant")) == 1
    assert result.answered == expected.answered and result.dial_error == expected.dial_error
    if result.answered:
        assert result.session == room_name(request.attempt_id)
        assert '"phase":"answered"' in livekit.rooms[room_name(request.attempt_id)].metadata
    # The activity really was retried (the first try failed on the lost answer).
    assert livekit.methods().count("ListRooms") == 2


@pytest.mark.parametrize("slow_retry", [False, True])
async def test_a_ring_longer_than_the_keep_alive_heartbeats_is_still_remembered(
    time_env: WorkflowEnvironment, livekit: FakeLiveKit, slow_retry: bool
) -> None:
    """The dial's keep-alive heartbeats (a third of its heartbeat timeout) replaced its `dialing` with
    no details: a ring longer than that whose answer was lost with its room rang again on each retry.
    So did a retry's own keep-alive, before it read anything (LiveKit slow, then failing), for the next."""
    livekit.sip_outcome = SipOutcome(
        503, "unavailable", None, callee_stays=False, delete_room=True, ring_seconds=2.5
    )
    if slow_retry:
        livekit.slow_list_rooms = (2, 2.0)  # the first retry's read
    result = await _dial_through_temporal(time_env, livekit, dial_request(), DialWithHeartbeats)
    assert len(livekit.calls("CreateSIPParticipant")) == 1
    assert (result.answered, result.dial_error) == (False, "non_classified_error")


async def test_a_worker_stopped_mid_ring_lets_the_ring_finish(
    dev_env: WorkflowEnvironment, livekit: FakeLiveKit
) -> None:
    """`outdial worker` stopped (a deploy) while a phone rings drains: the ring is answered, not hung up
    (the stop cancelled the dial, which hung up: an attempt lost, retried hours later)."""
    livekit.sip_outcome = SipOutcome(ring_seconds=2)
    settings = livekit_settings(livekit)
    calls = CallActivities(
        settings, LiveKitTelephony(settings, answer_poll_interval=0.05), SimulatedAnalyzer()
    )
    queue, request = f"dial-{uuid.uuid4()}", dial_request()
    options = {"task_queue": queue, "workflows": [DialOnce], "activities": [calls.dial]}
    stopping = Worker(dev_env.client, **options, graceful_shutdown_timeout=draining(settings))  # type: ignore[arg-type]
    async with stopping:
        handle = await dev_env.client.start_workflow(
            DialOnce.run, request, id=f"dial-{uuid.uuid4()}", task_queue=queue, result_type=DialResult
        )
        await asyncio.wait_for(livekit.rang.wait(), 10)
    async with Worker(dev_env.client, **options):  # type: ignore[arg-type]
        result = await handle.result()
    assert result.answered and result.session == room_name(request.attempt_id)
    assert len(livekit.calls("CreateSIPParticipant")) == 1 and livekit.calls("DeleteRoom") == []


@pytest.mark.parametrize("stopping_worker", [False, True])
async def test_a_cancelled_ring_hangs_up_even_when_its_worker_stops(
    livekit: FakeLiveKit, stopping_worker: bool
) -> None:
    """A worker stopping (a deploy) cancels its activities: the ring is hung up too, since the order may
    be cancelled meanwhile, and then nothing would hang up a ring left for the next worker's retry."""
    livekit.sip_outcome = SipOutcome(ring_seconds=3)  # cancelled as soon as it rings
    telephony = LiveKitTelephony(livekit_settings(livekit), answer_poll_interval=0.05)
    env = ActivityEnvironment()
    request = dial_request()
    dialling = asyncio.ensure_future(env.run(telephony.dial, request))
    await asyncio.wait_for(livekit.rang.wait(), 10)
    if stopping_worker:
        env.worker_shutdown()
    env.cancel(ActivityCancellationDetails(worker_shutdown=stopping_worker, cancel_requested=True))
    with pytest.raises(asyncio.CancelledError):
        await dialling
    assert [r.room for r in livekit.calls("DeleteRoom")] == [room_name(request.attempt_id)]


async def test_a_late_retry_reads_an_earlier_ring_but_never_rings_afresh(livekit: FakeLiveKit) -> None:
    """The first try rang in time and lost the answer (5xx); its retry, started after the window closed
    (`ring_by`), still finds the callee. A late retry whose attempt never rang creates no room, no ring."""
    livekit.sip_outcome = SipOutcome(503, "unavailable", None)  # rang and answered, the answer lost
    telephony = LiveKitTelephony(livekit_settings(livekit), answer_poll_interval=0.05)
    ring_by = datetime.now(UTC)
    late = ring_by + timedelta(seconds=1)
    request = dial_request(ring_by=ring_by)
    with pytest.raises(Exception):  # noqa: B017 — the try fails; its retry reads the ledger
        await activity_started_at(ring_by).run(telephony.dial, request)
    result = await activity_started_at(late, attempt=2).run(telephony.dial, request)
    assert result.answered and result.session == room_name(request.attempt_id)
    fresh = dial_request(ring_by=ring_by)
    with pytest.raises(ApplicationError) as refused:
        await activity_started_at(late, attempt=2).run(telephony.dial, fresh)
    assert refused.value.type == DIAL_TOO_LATE and refused.value.non_retryable
    assert (
        len(livekit.calls("CreateSIPParticipant")) == 1 and room_name(fresh.attempt_id) not in livekit.rooms
    )


async def test_on_livekit_cloud_the_sdk_never_sends_a_ring_again(
    livekit: FakeLiveKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """livekit-api fails over to another region of a `*.livekit.cloud` URL after a 5xx, sending the same
    CreateSIPParticipant again: the callee's phone rang twice in one dial. Only the name is faked."""
    cloud = "proj.livekit.cloud"
    resolve = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **k: resolve("127.0.0.1" if host == cloud else host, *a, **k)
    )
    livekit.sip_outcome = SipOutcome(503, "unavailable", None)  # rang and answered, the answer lost
    port = livekit.url.rsplit(":", 1)[1]
    telephony = LiveKitTelephony(livekit_settings(livekit, livekit_url=f"http://{cloud}:{port}"))
    with pytest.raises(Exception):  # noqa: B017 — the activity fails; its retry reads the ledger
        await telephony.dial(dial_request())
    assert len(livekit.calls("CreateSIPParticipant")) == 1


# -- converse: asynchronous completion by the agent process ----------------------------------------------


HEARTBEAT_TIMEOUT = timedelta(seconds=1)


@workflow.defn(sandboxed=False)
class ConverseOnce:
    """Runs only converse, with a short heartbeat timeout, to show a dead agent is noticed."""

    @workflow.run
    async def run(self, request: ConverseRequest) -> ConverseResult:
        return await workflow.execute_activity(
            "converse",
            request,
            result_type=ConverseResult,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=3),
        )


async def test_a_dead_agent_is_noticed_within_the_heartbeat_timeout_and_the_call_hung_up(
    dev_env: WorkflowEnvironment, livekit: FakeLiveKit
) -> None:
    """The agent's heartbeats keep converse alive past its heartbeat timeout; when the agent dies (no
    more heartbeats, gone from the room) the attempt is over within that timeout, and hung up."""
    settings = livekit_settings(livekit)
    calls = CallActivities(settings, LiveKitTelephony(settings), SimulatedAnalyzer())
    call_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4())
    room = room_name(attempt_id)
    livekit.rooms[room] = models_pb.Room(name=room)  # answered, the agent in the room
    livekit.add_agent(room)
    request = ConverseRequest(
        call_id=call_id,
        attempt_id=attempt_id,
        attempt_number=1,
        session=room,
        to_phone_number=TO,
        from_phone_number=FROM,
        assistant={"id": "a", "organization_id": "o", "prompt": "hi"},  # type: ignore[arg-type]
    )
    queue = f"converse-{uuid.uuid4()}"
    async with Worker(
        dev_env.client, task_queue=queue, workflows=[ConverseOnce], activities=[calls.converse]
    ):
        handle = await dev_env.client.start_workflow(
            ConverseOnce.run, request, id=f"call-{call_id}", task_queue=queue, result_type=ConverseResult
        )
        link = ConverseLink(dev_env.client, call_id, attempt_id, poll_interval=0.05, heartbeat_interval=0.2)
        link.start(on_cancel=lambda: None)
        await link.found()

        async def pending() -> object:
            return (await handle.describe()).raw_description.pending_activities[0]

        alive = await eventually(
            pending,
            lambda p: (
                p.last_heartbeat_time.ToDatetime() - p.last_started_time.ToDatetime()  # type: ignore[attr-defined]
                > 2 * HEARTBEAT_TIMEOUT
            ),
        )
        assert alive.attempt == 1  # type: ignore[attr-defined]  # kept alive by the agent alone
        await link._stop()  # the agent process dies: no more heartbeats ...
        livekit.participants[room] = []  # ... and LiveKit drops it from the room
        died = asyncio.get_running_loop().time()
        result = await handle.result()
        noticed_after = asyncio.get_running_loop().time() - died
    assert result.result == "unknown" and result.end_reason is None and result.ended_by == "system"
    assert [r.room for r in livekit.calls("DeleteRoom")] == [room]
    # The server checks heartbeats on timers: it notices between one and two timeouts after the last
    # heartbeat (measured: ~2.9 s here); then the retried converse finds no agent and hangs up.
    assert noticed_after < 2 * HEARTBEAT_TIMEOUT.total_seconds() + 2, noticed_after


async def start_livekit_order(client: Client, fake: FakeLiveKit, queue: str) -> tuple[str, object]:
    call_id = str(uuid.uuid4())
    params = CallCreateParams.model_validate(
        {
            "phone_number": TO,
            "force_now": True,
            "assistant": {"prompt": "Sell {{product}}", "end_of_call_sentence": "Bye now."},
            "prompt_variables": {"product": "solar panels"},
        }
    )
    handle = await client.start_workflow(
        "CallOrderWorkflow", params, id=f"call-{call_id}", task_queue=queue, result_type=Call
    )
    return call_id, handle


async def dispatched_attempt(fake: FakeLiveKit, timeout: float = 20) -> str:
    """The agent's view: the attempt id arrives with the dispatch."""
    async with asyncio.timeout(timeout):
        await fake.rang.wait()
    from activities.livekit import DispatchMetadata

    return DispatchMetadata.model_validate_json(fake.calls("CreateDispatch")[0].metadata).attempt_id

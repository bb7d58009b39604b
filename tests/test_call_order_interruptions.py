"""An order interrupted in every phase (time-skipping): Temporal's cancellation while it queues for a
permit or while its call is analyzed, the cancel signal after the calls, a dial that keeps failing,
pause and resume during a retry delay. Each ends with a truthful status, stored, and nothing leaked."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

import workflows.search_attributes as sa
from activities.calls import CallActivities
from activities.compliance import ComplianceActivities, ContactCheckRequest
from activities.concurrency import INVALID_PERMIT_REQUEST, ConcurrencyActivities
from activities.persistence import PERSIST_ACTIVITY, CallSnapshot, PersistenceActivities
from activities.providers import DIAL_TOO_LATE
from activities.simulated import SimulatedAnalyzer, SimulatedRingLedger, SimulatedTelephony
from api.store import get_call
from models import Call
from models.concurrency import PermitRequest
from models.settings import Settings
from models.tables import Database
from models.workflow_io import (
    ConverseRequest,
    ConverseResult,
    DialRequest,
    DialResult,
    HangUpRequest,
)
from tests.helpers import activity_started_at, current_details, eventually, settings_for_tests
from tests.http_fakes import FakeOpenAI, Status, serve
from tests.test_api_storage import RecordingTelephony
from tests.test_call_order import ALWAYS_OPEN, ended, order, start, started, status_of
from tests.test_call_order_concurrency import semaphore_ended, semaphore_of
from workers import create_worker
from workers.worker import WORKFLOWS
from workflows import workflow_runner
from workflows.call_order import CallOrderWorkflow

OUTCOME = {"outcome": "interested", "outcome_summary": "She asked for the details by email."}


def stored(settings: Settings, call: Call) -> Call:
    record = get_call(Database.for_url(settings.database_url), call.organization_id, call.id)
    assert record is not None
    return Call.model_validate(record.call)


async def attributes_of(client: Client, handle: WorkflowHandle[Any, Call]) -> dict[str, bytes]:
    """The search attributes set (raw: the time-skipping server keeps an unset one as null)."""
    description = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
        )
    )
    fields = description.workflow_execution_info.search_attributes.indexed_fields
    return {
        name: payload.data for name, payload in fields.items() if payload.data not in (b"", b"null", b"[]")
    }


def hold_the_final_write(monkeypatch: pytest.MonkeyPatch, status: str) -> tuple[asyncio.Event, asyncio.Event]:
    """The order's write of its final `status` waits: set when it is writing, set `proceed` to go on."""
    real_persist = PersistenceActivities.persist_call
    writing, proceed = asyncio.Event(), asyncio.Event()

    @activity.defn(name=PERSIST_ACTIVITY)
    async def held_final_write(self, snapshot: CallSnapshot) -> bool:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        if snapshot.call.status == status:
            writing.set()
            await proceed.wait()
        return await real_persist(self, snapshot)

    monkeypatch.setattr(PersistenceActivities, "persist_call", held_final_write)
    return writing, proceed


async def test_temporal_cancellation_while_queued_for_a_permit_ends_it_cancelled(time_env, task_queue):
    settings = settings_for_tests()
    key = f"team-{task_queue}"
    holding = order("human", metadata={"simulation.call_seconds": "3600"}, concurrency={"key": key, "max": 1})
    queued = order("human", concurrency={"key": key, "max": 1})
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        first = await start(time_env, task_queue, holding)
        await eventually(lambda: status_of(first), lambda s: s == "calling")
        second = await start(time_env, task_queue, queued)
        await eventually(lambda: status_of(second), lambda s: s == "queued_for_calling")
        details = await current_details(first), await current_details(second)
        await second.cancel()
        call = await second.result()
        await first.signal(CallOrderWorkflow.cancel)
        await first.result()
        await semaphore_ended(time_env, key)  # the cancelled waiter left the queue: nothing held
    assert (call.status, call.calls_count, call.is_cancelled) == ("cancelled", 0, True)
    assert stored(settings, call).status == "cancelled"
    assert details == (  # the Web UI's current details
        "**calling** +33612345678: attempt 1/3",
        f"**queued_for_calling**: attempt 1/3 waits for a permit of key `{key}`",
    )


async def test_temporal_cancellation_while_joining_the_queue_ends_it_cancelled(
    dev_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """Cancelled while its request for a permit is under way (the activity Temporal then cancels). On
    the real dev server: the time-skipping one stalls now and then on an activity that completes after
    its cancellation (ACTIVITY_UNKNOWN)."""
    settings = settings_for_tests()
    key = f"team-{task_queue}"
    real_request = ConcurrencyActivities.concurrency_request_permit
    requested, proceed, first_id = asyncio.Event(), asyncio.Event(), f"call-{uuid.uuid4()}"

    @activity.defn(name="concurrency_request_permit")
    async def slow_request(self, request: PermitRequest) -> None:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        if request.holder_workflow_id != first_id:
            requested.set()
            await proceed.wait()
        await real_request(self, request)

    monkeypatch.setattr(ConcurrencyActivities, "concurrency_request_permit", slow_request)
    holding = order("human", metadata={"simulation.call_seconds": "3600"}, concurrency={"key": key, "max": 1})
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings):
        first = await dev_env.client.start_workflow(
            CallOrderWorkflow.run, holding, id=first_id, task_queue=task_queue
        )
        # The first holds the permit (so the key's semaphore runs and hears the second's release).
        await eventually(lambda: status_of(first), lambda s: s == "calling")
        second = await start(dev_env, task_queue, order("human", concurrency={"key": key, "max": 1}))
        await asyncio.wait_for(requested.wait(), timeout=20)
        await second.cancel()
        call = await second.result()
        proceed.set()
        await first.signal(CallOrderWorkflow.cancel)
        await first.result()
        semaphore = dev_env.client.get_workflow_handle(semaphore_of(key))
        state = await semaphore.query("state")
    # The late request (after the order was gone) was recognised as one already released.
    assert state["holders"] == [] and state["waiters"] == [] and state["stats"]["duplicate_requests"] == 1
    assert (call.status, call.calls_count) == ("cancelled", 0)
    assert stored(settings, call).status == "cancelled"


async def test_temporal_cancellation_during_the_analysis_completes_the_order(time_env, task_queue):
    llm = FakeOpenAI()
    llm.script = {"call_outcome": [Status(503)]}  # down for good: the analysis waits
    async with serve(llm.routes) as base:
        settings = settings_for_tests(
            analyzer="openai", openai_api_key="sk-test", openai_base_url=f"{base}/v1"
        )
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            handle = await start(time_env, task_queue, order("human:interested"))
            await eventually(lambda: status_of(handle), lambda s: s == "post_processing")
            await handle.cancel()
            call = await handle.result()
    assert (call.status, call.outcome, call.outcome_summary) == ("completed", None, "analysis cancelled")
    assert call.call_attempts[0].result == "human" and stored(settings, call).status == "completed"


async def test_temporal_cancellation_while_the_order_closes_lets_it_finish(
    time_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """Cancelled (Web UI, `temporal workflow cancel`) while its final state is being written: the run
    still completes with its Call, and the database holds that final state."""
    writing, proceed = hold_the_final_write(monkeypatch, "completed")
    settings = settings_for_tests()
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, order("human:interested"))
        await asyncio.wait_for(writing.wait(), timeout=60)
        await handle.cancel()
        proceed.set()
        call = await handle.result()
        description = await handle.describe()
    assert (call.status, call.is_cancelled) == ("completed", False)
    assert description.status == WorkflowExecutionStatus.COMPLETED
    assert stored(settings, call).status == "completed"


async def test_cancel_while_ringing_abandons_the_dial_without_an_error_log(
    dev_env, task_queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The dial an order stops waiting for ends cancelled, as expected: the worker must not log that
    outcome as an exception nobody retrieved (it did, at ERROR with a traceback, for every order
    cancelled while ringing or talking, whenever the garbage collector ran before the order closed).
    On the real server: the time-skipping one stops skipping for good after a cancelled activity whose
    workflow ended (the module's later tests then wait in real time)."""
    closing, proceed = hold_the_final_write(monkeypatch, "cancelled")
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(dev_env, task_queue, order("human", metadata={"simulation.ring_seconds": "60"}))
        await eventually(
            lambda: handle.query(CallOrderWorkflow.attempts), lambda a: bool(a) and a[0].status == "ringing"
        )
        await handle.signal(CallOrderWorkflow.cancel)
        await asyncio.wait_for(closing.wait(), timeout=60)
        gc.collect()  # the abandoned dial is freed while its order is still in the worker's cache
        proceed.set()
        call = await handle.result()
    assert (call.status, call.call_attempts[0].end_reason) == ("cancelled", "participant_removed")
    assert not [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_cancelled_ringing_order_keeps_its_permit_until_its_phone_stopped_ringing(
    dev_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """Two orders on a key of max 1, the first cancelled while its phone rings: the second rings only once
    the first's dial has ended, not as soon as the cancel was heard (two phones rang together for up to
    the dial's heartbeat interval, on a key that allows one)."""
    rings: dict[str, list[float]] = {}  # call id: when its dial started, then when it ended
    real_dial = SimulatedTelephony.dial

    async def timed_dial(self: SimulatedTelephony, request: DialRequest) -> DialResult:
        ring = rings.setdefault(request.call_id, [time.monotonic()])
        try:
            return await real_dial(self, request)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # a trunk takes its time to hang up
            raise
        finally:
            ring.append(time.monotonic())

    monkeypatch.setattr(SimulatedTelephony, "dial", timed_dial)
    key = {"key": f"trunk-{uuid.uuid4().hex[:8]}", "max": 1}
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings_for_tests()):
        ringing = order("human", force_now=True, concurrency=key, metadata={"simulation.ring_seconds": "60"})
        first = await start(dev_env, task_queue, ringing)
        await eventually(
            lambda: first.query(CallOrderWorkflow.attempts), lambda a: bool(a) and a[0].status == "ringing"
        )
        second = await start(dev_env, task_queue, order("human", force_now=True, concurrency=key))
        await eventually(lambda: status_of(second), lambda s: s == "queued_for_calling")
        await first.signal(CallOrderWorkflow.cancel)
        await first.cancel()  # and Temporal's cancellation on top (the Web UI's): the dial still ends first
        cancelled, called = await first.result(), await second.result()
    assert (cancelled.status, called.status) == ("cancelled", "completed")
    first_ended, second_rang = rings[cancelled.id][1], rings[called.id][0]
    assert first_ended <= second_rang


async def test_a_cancelled_conversation_whose_agent_is_gone_is_hung_up_before_the_permit_goes_back(
    dev_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """The voice agent completes converse itself; cancelled while its agent is gone, the conversation
    ends only by its heartbeat timeout, and nobody hung up: the order does, then gives its permit back
    (before, the line stayed open in silence, and the next order on the key could ring beside it). The
    trunk refuses the first hang-up, and Temporal's cancellation comes meanwhile: the order still hangs up
    first. On the real server, in real time (30 s): the time-skipping one does not time out an async
    activity whose cancellation was asked for."""
    hung_up: list[HangUpRequest] = []
    tries: list[HangUpRequest] = []

    async def agent_gone(self: SimulatedTelephony, request: ConverseRequest) -> ConverseResult:
        activity.raise_complete_async()  # handed to an agent that never reports

    async def end_call(self: SimulatedTelephony, request: HangUpRequest) -> None:
        tries.append(request)
        if len(tries) == 1:
            raise RuntimeError("the trunk is busy")  # retried
        hung_up.append(request)

    monkeypatch.setattr(SimulatedTelephony, "converse", agent_gone)
    monkeypatch.setattr(SimulatedTelephony, "end_call", end_call)
    key = f"trunk-{uuid.uuid4().hex[:8]}"
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings_for_tests()):
        talking = order("human", force_now=True, concurrency={"key": key, "max": 1})
        handle = await start(dev_env, task_queue, talking)
        await eventually(
            lambda: handle.query(CallOrderWorkflow.attempts), lambda a: bool(a) and a[0].status == "ongoing"
        )
        await handle.signal(CallOrderWorkflow.cancel)
        await eventually(lambda: asyncio.sleep(0, len(tries)), lambda n: n == 1, timeout=90)  # 30 s on
        await handle.cancel()  # Temporal's cancellation on top, while it hangs up
        call = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()
    assert call.status == "cancelled" and call.call_attempts[0].end_reason == "participant_removed"
    [request] = hung_up
    attempt_id = call.call_attempts[0].id
    assert (request.attempt_id, request.session) == (attempt_id, f"simulated-{attempt_id}")
    steps = [
        "hang up" if e.activity_task_scheduled_event_attributes.activity_type.name == "hang_up" else "release"
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "hang_up"
        or e.HasField("signal_external_workflow_execution_initiated_event_attributes")
    ]
    assert steps == ["hang up", "release"]  # hung up before the permit went back to the semaphore


async def test_a_concurrency_key_the_server_refuses_ends_the_order_errored(
    time_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """A permit request Temporal refuses for good (a key it cannot name a semaphore by) ends the order
    `errored` with the server's reason, instead of queueing it for ever."""

    @activity.defn(name="concurrency_request_permit")
    async def refused(self, request: PermitRequest) -> None:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        raise ApplicationError(
            "concurrency key refused by Temporal: WorkflowId exceeds maximum allowed length",
            type=INVALID_PERMIT_REQUEST,
            non_retryable=True,
        )

    monkeypatch.setattr(ConcurrencyActivities, "concurrency_request_permit", refused)
    settings = settings_for_tests()
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, order("human", concurrency={"key": "k", "max": 1}))
        call = await handle.result()
    assert (call.status, call.calls_count) == ("errored", 0)
    assert stored(settings, call).status == "errored"


async def test_the_cancel_signal_after_the_calls_changes_nothing(time_env, task_queue):
    llm = FakeOpenAI()
    llm.script = {"call_outcome": [Status(503)] * 4 + [OUTCOME]}
    async with serve(llm.routes) as base:
        settings = settings_for_tests(
            analyzer="openai", openai_api_key="sk-test", openai_base_url=f"{base}/v1"
        )
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            handle = await start(time_env, task_queue, order("human:interested"))
            await eventually(lambda: status_of(handle), lambda s: s == "post_processing")
            await handle.signal(CallOrderWorkflow.cancel)
            call = await handle.result()
    assert (call.status, call.outcome, call.is_cancelled) == ("completed", "interested", False)


async def test_a_dial_that_keeps_failing_ends_the_attempt_and_the_order_tries_again(
    time_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """A trunk that is down for the first attempt (every activity retry fails): that attempt ends in
    error, and the retry config's next attempt reaches the human."""
    real_dial = SimulatedTelephony.dial
    tries: list[int] = []

    async def flaky_dial(self: SimulatedTelephony, request: DialRequest) -> DialResult:
        tries.append(request.attempt_number)
        if request.attempt_number == 1:
            raise ConnectionError("SIP trunk unreachable")
        return await real_dial(self, request)

    monkeypatch.setattr(SimulatedTelephony, "dial", flaky_dial)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human"))
        call = await handle.result()
    first, second = reversed(call.call_attempts)
    assert call.status == "completed" and tries == [1, 1, 1, 2]
    assert (first.status, first.dial_error, first.ended_by) == ("error", "non_classified_error", "system")
    assert first.end_reason is None  # the official client has no word for it: the log says why
    assert second.result == "human" and started(second) - ended(first) >= timedelta(seconds=600)


async def test_a_bad_simulation_still_ends_the_order_errored(time_env, task_queue):
    """A refusal no retry can fix is the order's error, not one attempt's."""
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, order("sneeze"))).result()
    assert call.status == "errored" and call.calls_count == 1
    assert call.call_attempts[0].end_reason is None


async def test_pause_and_resume_during_a_retry_delay_keep_the_delay(time_env, task_queue):
    params = order("voicemail,human")  # a retry delay of 600 s
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        await eventually(
            lambda: handle.query(CallOrderWorkflow.attempts), lambda a: len(a) == 1 and a[0].ended_at
        )
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        assert "NextAttemptAt" in await attributes_of(time_env.client, handle)
        await handle.signal(CallOrderWorkflow.pause)
        await eventually(lambda: status_of(handle), lambda s: s == "paused")
        paused = await attributes_of(time_env.client, handle)
        await handle.signal(CallOrderWorkflow.resume)
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        call = await handle.result()
    first, second = reversed(call.call_attempts)
    assert "NextAttemptAt" not in paused  # no attempt waits for a time while paused
    assert first.result == "voicemail" and started(second) - ended(first) >= timedelta(seconds=600)


def a_window_ahead() -> tuple[datetime, datetime, datetime, dict[str, Any]]:
    """Now, and a one-minute calling window (UTC, every day) opening 15 to 75 s from now: when it opens,
    when it closes, and the retry config that has it."""
    now = datetime.now(UTC)
    opens = (now + timedelta(seconds=75)).replace(second=0, microsecond=0)
    if opens.hour == 23 and opens.minute == 59:  # a window ends the day it starts
        opens += timedelta(minutes=2)
    closes = opens + timedelta(minutes=1)
    window = {
        "calling_window_start_time": f"{opens:%H:%M}",
        "calling_window_end_time": f"{closes:%H:%M}",
        "retry_delay_seconds": 600,
    }
    return now, opens, closes, {**ALWAYS_OPEN, "calling_windows": [window]}


async def test_an_attempt_whose_window_closed_while_no_worker_ran_waits_for_the_next_one(dev_env, task_queue):
    """Its time came while no worker ran the order (down, or behind a backlog), and its window had closed
    by the time one did: it waits for the next window instead of dialing as the worker comes back. On the
    real dev server and its clock: the time-skipping one holds its clock while a workflow task waits."""
    now, opens, closes, retry = a_window_ahead()
    params = order("human", retry=retry)
    settings = settings_for_tests()
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings):
        handle = await start(dev_env, task_queue, params)
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")

    # The worker is gone until the window has opened and closed: the order's timer fires meanwhile.
    async def fired() -> bool:  # the order's timer fired on the server: its time came, no worker ran it
        return [
            e async for e in handle.fetch_history_events() if e.HasField("timer_fired_event_attributes")
        ] != []

    async def closed() -> bool:  # and its window has closed since (the server's clock is this one)
        return datetime.now(UTC) > closes + timedelta(seconds=1)

    await eventually(fired, bool, timeout=(opens - now).total_seconds() + 30)
    await eventually(closed, bool, timeout=(closes - now).total_seconds() + 30)
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings):
        await eventually(
            lambda: handle.query(CallOrderWorkflow.call),
            lambda call: call.status == "scheduled" and call.calls_count == 0,
            timeout=20,
        )
        description = await handle.describe()
        next_attempt = description.typed_search_attributes.get(sa.NEXT_ATTEMPT_AT)
        assert next_attempt == opens + timedelta(days=1), next_attempt
        await handle.signal(CallOrderWorkflow.cancel)
        assert (await handle.result()).calls_count == 0
    history = await handle.fetch_history()
    converter, runner = pydantic_data_converter, workflow_runner()
    replayer = Replayer(workflows=[CallOrderWorkflow], data_converter=converter, workflow_runner=runner)
    # Its new path, the patch's marker, replays (one run is kept: call_order_woken_after_its_window_closed)
    await replayer.replay_workflow(history)


def a_window_closing_soon() -> tuple[datetime, datetime, dict[str, Any]]:
    """A calling window open now, every day, that closes at a minute's turn 15 to 75 s from now, in a
    zone whose clock reads about noon (so it never spans midnight): when it opened and when it closes
    (UTC), and the retry config that has it."""
    now = datetime.now(UTC)
    shift = 12 - now.hour  # Etc/GMT-<n> is UTC+<n>
    zone = "UTC" if shift == 0 else f"Etc/GMT{-shift:+d}"
    local = now + timedelta(hours=shift)
    opens = local.replace(second=0, microsecond=0)
    closes = opens + timedelta(minutes=1 if local.second < 45 else 2)
    window = {
        "calling_window_start_time": f"{opens:%H:%M}",
        "calling_window_end_time": f"{closes:%H:%M}",
        "retry_delay_seconds": 600,
    }
    retry = {**ALWAYS_OPEN, "timezone": zone, "calling_windows": [window]}
    return opens - timedelta(hours=shift), closes - timedelta(hours=shift), retry


async def test_a_dial_that_starts_after_its_window_closed_rings_nobody_and_waits_for_the_next_one(
    dev_env, task_queue, monkeypatch: pytest.MonkeyPatch
):
    """The order dials inside its window, but no worker starts the dial until the window has closed (its
    workers behind a backlog, or gone): the dial refuses to ring, no attempt is counted, and the order
    waits for the next window. Here the workers that run activities stop as the order is prepared (its
    last step before the dial), while a workflow-only worker goes on, and one comes back after the
    window. On the real dev server and its clock, which is the dial's (its start time is the server's).
    (The number's check, after the assistant is resolved, is the order's last step before the dial.)"""
    opens, closes, retry = a_window_closing_soon()
    rung: list[str] = []
    real_dial = SimulatedTelephony.dial

    async def recorded_dial(self: SimulatedTelephony, request: DialRequest) -> DialResult:
        rung.append(request.call_id)
        return await real_dial(self, request)

    preparing, prepared = asyncio.Event(), asyncio.Event()
    real_check = ComplianceActivities.check_contact_allowed

    @activity.defn(name="check_contact_allowed")
    async def held_check(self, request: ContactCheckRequest) -> None:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        preparing.set()
        await prepared.wait()
        return await real_check(self, request)

    monkeypatch.setattr(SimulatedTelephony, "dial", recorded_dial)
    monkeypatch.setattr(ComplianceActivities, "check_contact_allowed", held_check)
    settings = settings_for_tests()
    elsewhere = await Client.connect(  # a worker of its own (one process may not run two on a queue)
        dev_env.client.service_client.config.target_host, data_converter=pydantic_data_converter
    )
    workflows_only = Worker(
        elsewhere, task_queue=task_queue, workflows=WORKFLOWS, workflow_runner=workflow_runner()
    )
    async with workflows_only:
        activities = create_worker(
            dev_env.client,
            task_queue=task_queue,
            settings=settings,
            max_cached_workflows=0,  # the order's tasks go on at the workflow-only worker at once
            graceful_shutdown_timeout=timedelta(seconds=30),  # the preparation completes as it stops
        )
        async with activities:
            handle = await start(dev_env, task_queue, order("human", retry=retry))
            await asyncio.wait_for(preparing.wait(), timeout=30)
            stopping = asyncio.ensure_future(activities.shutdown())
            prepared.set()
            await stopping
        await eventually(lambda: status_of(handle), lambda s: s == "calling")  # the dial waits for a worker
        assert datetime.now(UTC) < closes
        await eventually(lambda: asyncio.sleep(0, datetime.now(UTC) > closes), bool, timeout=90)
        async with create_worker(dev_env.client, task_queue=task_queue, settings=settings):
            call = await eventually(
                lambda: handle.query(CallOrderWorkflow.call),
                lambda call: call.status == "scheduled" and call.calls_count == 0,
                timeout=30,
            )
            next_attempt = (await handle.describe()).typed_search_attributes.get(sa.NEXT_ATTEMPT_AT)
            await handle.signal(CallOrderWorkflow.cancel)
            final = await handle.result()
    assert rung == [] and final.calls_count == 0 and call.call_attempts == []
    assert call.scheduled_at == next_attempt == opens + timedelta(days=1), next_attempt
    failures = [
        e.activity_task_failed_event_attributes.failure.application_failure_info.type
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert failures == [DIAL_TOO_LATE]


def dial_by_six(**fields: Any) -> DialRequest:
    """A first attempt's dial sent in a window that closes at 18:00 UTC."""
    return DialRequest.model_validate(
        {
            "call_id": "c",
            "attempt_id": "a",
            "attempt_number": 1,
            "to_phone_number": "+33612345678",
            "from_phone_number": "+33159000010",
            "ring_by": datetime(2026, 12, 7, 18, tzinfo=UTC),
            **fields,
        }
    )


async def test_a_dial_refuses_to_ring_when_its_first_try_starts_after_ring_by() -> None:
    """A first try refuses at once: nothing can have rung. A retry goes to the provider, which reads the
    ring an earlier try started (below) and refuses only a fresh one."""
    telephony = RecordingTelephony()
    activities = CallActivities(settings_for_tests(), telephony, SimulatedAnalyzer())  # type: ignore[arg-type]
    request = dial_by_six(attempt_id="a", livekit_outbound_trunk_id="ST_x")
    ring_by = request.ring_by
    assert ring_by is not None
    late = ring_by + timedelta(seconds=1)
    with pytest.raises(ApplicationError) as refused:
        await activity_started_at(late).run(activities.dial, request)
    assert (refused.value.type, refused.value.non_retryable) == (DIAL_TOO_LATE, True)
    assert "after its calling window closed at 2026-12-07T18:00:00+00:00" in refused.value.message
    await activity_started_at(ring_by).run(activities.dial, request)  # at the close itself: in time
    await activity_started_at(late, attempt=2).run(activities.dial, request)
    forced = request.model_copy(update={"ring_by": None})  # force_now: any time
    await activity_started_at(late).run(activities.dial, forced)
    assert len(telephony.dialled) == 3


async def test_a_late_simulated_retry_reads_an_earlier_ring_but_never_rings_afresh(tmp_path: Path) -> None:
    """The first try rang in time and its worker died; the retry, on another worker after the window
    closed, waits for the same callee. A retry whose first try died before ringing rings nobody."""
    ledger = tmp_path / "rings.jsonl"
    request = dial_by_six(attempt_id="rang-in-time", metadata={"simulation": "human"})
    ring_by = request.ring_by
    assert ring_by is not None
    late = ring_by + timedelta(seconds=1)
    await activity_started_at(ring_by).run(SimulatedTelephony(ledger).dial, request)
    retried = await activity_started_at(late, attempt=2).run(SimulatedTelephony(ledger).dial, request)
    assert retried.answered
    unrung = request.model_copy(update={"attempt_id": "died-before-ringing"})
    for telephony in (SimulatedTelephony(ledger), SimulatedTelephony()):  # with the ledger, and without
        with pytest.raises(ApplicationError) as refused:
            await activity_started_at(late, attempt=2).run(telephony.dial, unrung)
        assert refused.value.type == DIAL_TOO_LATE
    assert [ring.attempt_id for ring in SimulatedRingLedger(ledger).rings()] == ["rang-in-time"]

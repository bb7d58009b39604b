"""Record workflow histories for the replay test: `python -m tests.record_histories`.

Every file under tests/histories/ is one workflow run's history, named `<workflow id>.json` (the replay
must see the id it was recorded with). Only missing files are written: old recordings stay, since the
point is that histories made by older code keep replaying (delete a file to re-record it, or retire it
with a versioning decision). Run this when a workflow changes shape on purpose and commit the new files.

Since the patch `call-id-checked`, an order whose workflow id is not `call-<lowercase UUID>` fails at
once: the scenarios recorded before it keep their readable ids (their histories replay as they were),
and a new order scenario that must run needs a UUID id (`call-call_order_invalid_workflow_id` records
that failure itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.calls import CallActivities
from activities.persistence import PERSIST_ACTIVITY, CallSnapshot, PersistenceActivities
from activities.providers import DIAL_TOO_LATE
from activities.simulated import SimulatedAnalyzer, SimulatedTelephony
from models import CallCreateParams
from models.concurrency import SemaphoreInput
from models.tables import Database
from models.workflow_io import (
    AnalysisResult,
    AnalyzeRequest,
    DialRequest,
    DialResult,
    PreparedOrder,
    PrepareRequest,
)
from tests.helpers import eventually, settings_for_tests, start_campaign
from tests.http_fakes import serve
from workers import create_worker, register_search_attributes
from workflows.call_order import DEFAULT_ORGANIZATION, CallOrderWorkflow
from workflows.concurrency import ConcurrencySemaphoreWorkflow, organization_key, semaphore_workflow_id

HISTORIES = Path(__file__).parent / "histories"
OPEN = {
    "timezone": "Europe/Paris",
    "calling_windows": [{"calling_window_start_time": "10:00", "calling_window_end_time": "18:00"}],
}

ALWAYS = {  # for scenarios steered while they run: the test server's clock only moves during result()
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [
        {"calling_window_start_time": "00:00", "calling_window_end_time": "23:59", "retry_delay_seconds": 600}
    ],
}


def scenario(
    simulation: str, *, assistant: dict[str, object] | None = None, **extra: object
) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": "Offer {{name}} a demo.",
                "call_retry_config": OPEN,
                "structured_output_config": [{"name": "name", "type": "string", "required": True}],
                **(assistant or {}),
            },
            "prompt_variables": {"name": "Claire"},
            "metadata": {"simulation": simulation, "simulation.call_seconds": "30"},
            **extra,
        }
    )


async def save(handle: WorkflowHandle) -> None:  # type: ignore[type-arg]
    """Write the run's history as `<workflow id>.json`, unless that recording exists already."""
    # A run that fails is a history too; one never started (a scenario whose order now fails at once, so
    # starts no child) needs no recording when it has one.
    with contextlib.suppress(WorkflowFailureError, RPCError):
        await handle.result()
    path = HISTORIES / f"{handle.id}.json"
    if path.exists():
        return
    history = await handle.fetch_history()
    path.write_text(history.to_json())  # noqa: ASYNC240 - a small local file
    print(f"recorded {path.name}")


async def call_orders(client: Client, task_queue: str) -> None:
    """The CallOrderWorkflow scenarios, and the semaphore one of them starts."""
    orders = {
        # First, while the test server's clock is still near today (later scenarios skip years).
        "resumed_before_scheduled_at": scenario("human", scheduled_at="2099-01-05T09:00:00Z"),
        "voicemail_then_human": scenario("voicemail,human:interested"),
        "no_answer_exhausted": scenario("no_answer"),
        "with_concurrency_key": scenario("busy,human:completed", concurrency={"key": "replay", "max": 2}),
        # The same since the key is the organization's own (semaphore `concurrency-org_local:replay`).
        "with_an_organizations_concurrency_key": scenario(
            "busy,human:completed", concurrency={"key": "replay", "max": 2}
        ),
        "cancelled_while_waiting": scenario("human", scheduled_at="2099-01-05T09:00:00Z"),
        "force_now_during_a_call": scenario("voicemail,human", force_now=True),
        # Errors while initializing (a caller id nobody owns): the inline assistant shows all along.
        "errored_before_prepare": scenario("human", from_phone_number="+33100000099"),
        # The trunk down for attempt 1 (every dial retry fails): that attempt errs, attempt 2 talks.
        "dial_failed_then_retried": scenario("human"),
        # Paused and resumed during the retry delay after a voicemail: the delay is kept.
        "paused_during_a_retry_delay": scenario(
            "voicemail,human",
            assistant={"call_retry_config": ALWAYS},
            metadata={"simulation": "voicemail,human"},
        ),
        # The cancel signal while the conversation is analyzed (held until it arrives): ignored.
        "cancelled_during_the_analysis": scenario(
            "human:interested",
            assistant={"call_retry_config": ALWAYS},
            metadata={"simulation": "human:interested"},
        ),
        # Temporal's cancellation while the order is prepared (held until it is cancelled): cancelled.
        "cancelled_while_preparing": scenario("human"),
        # Temporal's cancellation while the final state is written (held until it arrives): completed.
        "cancelled_while_closing": scenario("human:interested"),
    }
    for name, params in orders.items():
        if (HISTORIES / f"call-call_order_{name}.json").exists():
            continue  # recorded: running it again would only move the test server's clock on
        handle = await client.start_workflow(
            CallOrderWorkflow.run, params, id=f"call-call_order_{name}", task_queue=task_queue
        )
        if name == "resumed_before_scheduled_at":
            await pause_and_resume(handle)
        if name == "force_now_during_a_call":
            await eventually(lambda h=handle: h.query(CallOrderWorkflow.status), lambda s: s == "calling")
            await handle.signal(CallOrderWorkflow.force_now)
        if name == "paused_during_a_retry_delay":
            await eventually(lambda h=handle: h.query(CallOrderWorkflow.attempts), lambda a: len(a) == 1)
            await pause_and_resume(handle)
        if name == "cancelled_during_the_analysis":
            await eventually(
                lambda h=handle: h.query(CallOrderWorkflow.status), lambda s: s == "post_processing"
            )
            await handle.signal(CallOrderWorkflow.cancel)
            ANALYSIS_HELD.set()
        if name == "cancelled_while_preparing":
            await asyncio.wait_for(PREPARING.wait(), timeout=30)
            await handle.cancel()
        if name == "cancelled_while_closing":
            await asyncio.wait_for(CLOSING.wait(), timeout=60)
            await handle.cancel()
            CLOSING_HELD.set()
        if name in ("cancelled_while_waiting", "resumed_before_scheduled_at"):
            await eventually(lambda h=handle: h.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
            await handle.signal(CallOrderWorkflow.cancel)
        await handle.result()
        await save(handle)
    # Started past the API and refused at once (InvalidCallOrder): a body the API would refuse, and
    # (patch call-id-checked) a workflow id that is not call-<lowercase UUID>.
    refused = {
        "invalid_input": {"phone_number": "0612345678"},
        "invalid_workflow_id": {"phone_number": "+33612345678"},
    }
    for name, body in refused.items():
        if not (HISTORIES / f"call-call_order_{name}.json").exists():
            handle = await client.start_workflow(
                "CallOrderWorkflow", body, id=f"call-call_order_{name}", task_queue=task_queue
            )
            await save(handle)


ANALYSIS_HELD = asyncio.Event()  # released once the scenario's signal was sent
PREPARING = asyncio.Event()  # the held preparation has begun
CLOSING, CLOSING_HELD = asyncio.Event(), asyncio.Event()  # the final write has begun; it may go on


# Ids are checked since the patch `call-id-checked`, and the time-skipping server does not record them:
# a new order scenario is named by its UUID (the file `<id>.json`).
CONTACT_CHECKED_BEFORE_A_RETRY = "call-00000000-0000-4000-8000-000000000042"


async def contact_checked_before_a_retry(client: Client, task_queue: str) -> None:
    """A voicemail, then the number checked again (patch `contact-checked-before-each-attempt`) before
    the retry that reaches a human."""
    if (HISTORIES / f"{CONTACT_CHECKED_BEFORE_A_RETRY}.json").exists():
        return
    handle = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("voicemail,human:interested"),
        id=CONTACT_CHECKED_BEFORE_A_RETRY,
        task_queue=task_queue,
    )
    await save(handle)


CANCELLED_WHILE_RINGING = "call-00000000-0000-4000-8000-000000000043"
# The same since the patch `cancelled-step-hung-up` (its marker, the wait that holds through a second
# cancellation).
CANCELLED_WHILE_RINGING_SINCE_HANG_UP = "call-00000000-0000-4000-8000-000000000045"


async def cancelled_while_ringing(client: Client, task_queue: str, workflow_id: str) -> None:
    """The cancel signal while the phone rings: the dial is waited for until it has ended (patch
    `cancelled-step-ends-before-its-permit`) before the order closes."""
    if (HISTORIES / f"{workflow_id}.json").exists():
        return
    ringing = scenario("human", metadata={"simulation": "human", "simulation.ring_seconds": "30"})
    handle = await client.start_workflow(
        CallOrderWorkflow.run, ringing, id=workflow_id, task_queue=task_queue
    )
    await eventually(lambda: handle.query(CallOrderWorkflow.attempts), lambda a: bool(a))
    await handle.signal(CallOrderWorkflow.cancel)
    await save(handle)


CONTACT_CHECKED_AFTER_THE_PERMIT = "call-00000000-0000-4000-8000-000000000046"


async def contact_checked_after_the_permit(client: Client, task_queue: str) -> None:
    """An order queued behind another's 30 s call on a key of max 1: once its permit comes, the number
    is looked up again (patch `contact-checked-after-the-permit`) before it dials."""
    if (HISTORIES / f"{CONTACT_CHECKED_AFTER_THE_PERMIT}.json").exists():
        return
    key = {"key": "replay-permit", "max": 1}
    ahead = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human", concurrency=key, phone_number="+33612345679"),
        id="call-00000000-0000-4000-8000-000000000047",  # not recorded: the call ahead
        task_queue=task_queue,
    )
    await eventually(lambda: ahead.query(CallOrderWorkflow.status), lambda s: s == "calling")
    handle = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human:interested", concurrency=key),
        id=CONTACT_CHECKED_AFTER_THE_PERMIT,
        task_queue=task_queue,
    )
    await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
    await save(handle)
    await ahead.result()


DIALED_TOO_LATE = "call-00000000-0000-4000-8000-000000000048"


async def dialed_too_late(client: Client, task_queue: str) -> None:
    """The first dial refused: it started after its calling window closed (`DIAL_TOO_LATE`, as behind a
    worker backlog); the order waits for the next window, where it reaches a human."""
    if (HISTORIES / f"{DIALED_TOO_LATE}.json").exists():
        return
    handle = await client.start_workflow(
        CallOrderWorkflow.run, scenario("human:interested"), id=DIALED_TOO_LATE, task_queue=task_queue
    )
    await save(handle)


LISTED_SINCE_ACCEPTED = "call-00000000-0000-4000-8000-000000000049"


async def listed_since_accepted(client: Client, task_queue: str) -> None:
    """The number listed do-not-contact by the call before (it ended `do_not_contact`): the order is
    refused once its assistant is resolved (patch `resolved-before-the-contact-check`), and errs."""
    if (HISTORIES / f"{LISTED_SINCE_ACCEPTED}.json").exists():
        return
    number = "+33612340049"
    listing = scenario("human:do_not_contact", phone_number=number)
    await client.execute_workflow(
        CallOrderWorkflow.run, listing, id=f"call-{uuid.uuid4()}", task_queue=task_queue
    )
    handle = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human", phone_number=number),
        id=LISTED_SINCE_ACCEPTED,
        task_queue=task_queue,
    )
    await save(handle)


def hold_the_providers() -> None:
    """The simulated providers, made to fail or wait where a scenario needs it (this process only)."""
    real_dial, real_analyze = SimulatedTelephony.dial, SimulatedAnalyzer.analyze

    async def dial(self: SimulatedTelephony, request: DialRequest) -> DialResult:
        if request.call_id == "call_order_dial_failed_then_retried" and request.attempt_number == 1:
            raise ConnectionError("SIP trunk unreachable")
        return await real_dial(self, request)

    async def analyze(self: SimulatedAnalyzer, request: AnalyzeRequest) -> AnalysisResult:
        if request.call_id == "call_order_cancelled_during_the_analysis":
            await ANALYSIS_HELD.wait()
        return await real_analyze(self, request)

    real_prepare = CallActivities.prepare_order

    @activity.defn(name="prepare_order")
    async def prepare_order(self, request: PrepareRequest) -> PreparedOrder:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        if request.call_id == "call_order_cancelled_while_preparing":
            PREPARING.set()
            while True:  # until Temporal cancels it: the cancellation comes with a heartbeat's answer
                activity.heartbeat()
                await asyncio.sleep(0.1)
        return await real_prepare(self, request)

    real_persist = PersistenceActivities.persist_call

    @activity.defn(name=PERSIST_ACTIVITY)
    async def persist_call(self, snapshot: CallSnapshot) -> bool:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        if snapshot.call.id == "call_order_cancelled_while_closing" and snapshot.call.status == "completed":
            CLOSING.set()
            await CLOSING_HELD.wait()
        return await real_persist(self, snapshot)

    real_dial_activity, refused_late = CallActivities.dial, set[str]()

    @activity.defn(name="dial")
    async def dial_activity(self, request: DialRequest) -> DialResult:  # type: ignore[no-untyped-def]  # an unannotated self, as temporalio reads hints
        if f"call-{request.call_id}" == DIALED_TOO_LATE and request.call_id not in refused_late:
            refused_late.add(request.call_id)
            raise ApplicationError(
                "the dial started after its calling window closed", type=DIAL_TOO_LATE, non_retryable=True
            )
        return await real_dial_activity(self, request)

    CallActivities.dial = dial_activity  # type: ignore[method-assign]
    PersistenceActivities.persist_call = persist_call  # type: ignore[method-assign]
    CallActivities.prepare_order = prepare_order  # type: ignore[method-assign]
    SimulatedTelephony.dial = dial  # type: ignore[method-assign]
    SimulatedAnalyzer.analyze = analyze  # type: ignore[method-assign]


async def pause_and_resume(handle: WorkflowHandle) -> None:  # type: ignore[type-arg]
    """Pause a waiting order and resume it (the resume-keeps-scheduled-at patch decides what follows)."""
    status = lambda: handle.query(CallOrderWorkflow.status)  # noqa: E731
    await eventually(status, lambda s: s == "scheduled")
    await handle.signal(CallOrderWorkflow.pause)
    await eventually(status, lambda s: s == "paused")
    await handle.signal(CallOrderWorkflow.resume)


async def start_semaphore(client: Client, task_queue: str, input: SemaphoreInput) -> WorkflowHandle:  # type: ignore[type-arg]
    """A key's semaphore started ahead of its orders, with settings they would not give it."""
    return await client.start_workflow(
        ConcurrencySemaphoreWorkflow.run, input, id=semaphore_workflow_id(input.key), task_queue=task_queue
    )


async def semaphore_continued_as_new(client: Client, task_queue: str) -> None:
    """A semaphore whose history outgrows its threshold: its first run ends in continue-as-new. The
    orders' key is their organization's own (`concurrency-replay-continue-as-new*.json` were recorded
    before it was, when the semaphore was named after the bare key)."""
    key = organization_key(DEFAULT_ORGANIZATION, "replay-continue-as-new")
    if all((HISTORIES / f"{semaphore_workflow_id(key)}{end}.json").exists() for end in ("", "-continued")):
        return
    semaphore = await start_semaphore(
        client,
        task_queue,
        SemaphoreInput(key=key, max=1, continue_as_new_after_events=50, idle_timeout_seconds=60),
    )
    orders = [
        await client.start_workflow(
            CallOrderWorkflow.run,
            scenario(
                "human:interested", concurrency={"key": "replay-continue-as-new", "max": 1}, force_now=True
            ),
            id=f"call-replay_semaphore_holder_{n}",
            task_queue=task_queue,
        )
        for n in range(4)
    ]
    for order in orders:
        await order.result()
    first_run = client.get_workflow_handle(semaphore.id, run_id=semaphore.result_run_id)
    history = await first_run.fetch_history()
    path = HISTORIES / f"{semaphore.id}.json"
    if not path.exists():
        path.write_text(history.to_json())  # noqa: ASYNC240 - a small local file
        print(f"recorded {path.name} (its first run, ended by continue-as-new)")
    # The run it continued as: started with the packed state (SemaphoreState.pack).
    continued = history.events[-1].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    await client.get_workflow_handle(semaphore.id).result()  # it completes after its idle timeout
    second = await client.get_workflow_handle(semaphore.id, run_id=continued).fetch_history()
    path = HISTORIES / f"{semaphore.id}-continued.json"
    if not path.exists():
        path.write_text(second.to_json())  # noqa: ASYNC240 - a small local file
        print(f"recorded {path.name} (the run it continued as, from packed state)")


async def semaphore_with_a_full_queue(client: Client, task_queue: str) -> None:
    """A key whose queue holds one waiter: the third order is turned away (`concurrency_deferred`),
    asks again a minute later and is called once there is room."""
    key = organization_key(DEFAULT_ORGANIZATION, "replay-full")
    turned_away_id = "call-call_order_deferred_by_a_full_queue"
    if all((HISTORIES / f"{wid}.json").exists() for wid in (turned_away_id, semaphore_workflow_id(key))):
        return
    semaphore = await start_semaphore(
        client, task_queue, SemaphoreInput(key=key, max=1, max_waiters=1, idle_timeout_seconds=60)
    )
    orders = []
    for n, (wid, status) in enumerate(
        [
            ("call-replay_full_queue_calling", "calling"),
            ("call-replay_full_queue_waiting", "queued_for_calling"),
        ]
    ):
        params = scenario("human:interested", concurrency={"key": "replay-full", "max": 1}, force_now=True)
        params.metadata = {**(params.metadata or {}), "simulation.call_seconds": str(300 - 200 * n)}
        orders.append(
            await client.start_workflow(CallOrderWorkflow.run, params, id=wid, task_queue=task_queue)
        )
        await eventually(
            lambda h=orders[-1]: h.query(CallOrderWorkflow.status), lambda s, want=status: s == want
        )
    turned_away = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human:interested", concurrency={"key": "replay-full", "max": 1}, force_now=True),
        id=turned_away_id,
        task_queue=task_queue,
    )
    for order in orders:
        await order.result()
    await save(turned_away)
    await save(semaphore)  # it completes after its idle timeout


async def semaphore_asked_together(client: Client, task_queue: str, settings: object) -> None:
    """Two orders' requests reach an idle key in one workflow task (its worker was away): one takes the
    free permit, the other waits, though the queue allows one waiter (patch `free-permits-first`)."""
    key = organization_key(DEFAULT_ORGANIZATION, "replay-together")
    if (HISTORIES / f"{semaphore_workflow_id(key)}.json").exists():
        return
    parked = f"{task_queue}-parked"
    semaphore = await start_semaphore(
        client, parked, SemaphoreInput(key=key, max=1, max_waiters=1, idle_timeout_seconds=60)
    )
    orders = []
    for _ in range(2):
        params = scenario(
            "human:interested", concurrency={"key": "replay-together", "max": 1}, force_now=True
        )
        orders.append(
            await client.start_workflow(
                CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
            )
        )

    async def requested(order: WorkflowHandle) -> bool:  # type: ignore[type-arg]
        events = (await order.fetch_history()).events
        asked = {
            e.event_id
            for e in events
            if e.activity_task_scheduled_event_attributes.activity_type.name == "concurrency_request_permit"
        }
        return any(e.activity_task_completed_event_attributes.scheduled_event_id in asked for e in events)

    for order in orders:
        await eventually(lambda o=order: requested(o), bool)
    async with create_worker(client, task_queue=parked, settings=settings):  # type: ignore[arg-type]
        for order in orders:
            await order.result()
        await save(semaphore)  # it completes after its idle timeout


async def notifications(client: Client, task_queue: str, receiver: str) -> None:
    """An order with a webhook: its CallNotificationsWorkflow child delivers after one refusal."""
    handle = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human:interested", assistant={"webhook_url": f"{receiver}/hook"}),
        id="call-call_order_with_webhook",
        task_queue=task_queue,
    )
    await save(handle)
    await save(client.get_workflow_handle("notify-call_order_with_webhook"))
    slack = {"channels": [{"id": "C0A"}, {"id": "C0B"}], "connection_id": "conn", "outcomes": ["interested"]}
    handle = await client.start_workflow(  # and one posting to two Slack channels (the simulated Slack)
        CallOrderWorkflow.run,
        scenario("human:interested", assistant={"webhook_url": f"{receiver}/hook", "slack": slack}),
        id="call-call_order_with_slack",
        task_queue=task_queue,
    )
    await save(handle)
    await save(client.get_workflow_handle("notify-call_order_with_slack"))


NOTIFIED_IN_BATCHES = "00000000-0000-4000-8000-000000000044"


async def notified_in_batches(client: Client, task_queue: str) -> None:
    """Ten Slack channels: eight deliveries, then (patch `deliveries-in-batches`) the other two."""
    if (HISTORIES / f"notify-{NOTIFIED_IN_BATCHES}.json").exists():
        return
    slack = {
        "channels": [{"id": f"C0{n}"} for n in range(10)],
        "connection_id": "conn",
        "outcomes": ["interested"],
    }
    handle = await client.start_workflow(
        CallOrderWorkflow.run,
        scenario("human:interested", assistant={"slack": slack}),
        id=f"call-{NOTIFIED_IN_BATCHES}",
        task_queue=task_queue,
    )
    await handle.result()
    await save(client.get_workflow_handle(f"notify-{NOTIFIED_IN_BATCHES}"))


@contextlib.asynccontextmanager
async def launched_campaign(
    env: WorkflowEnvironment, workflow_id: str, numbers: list[str]
) -> AsyncIterator[WorkflowHandle]:  # type: ignore[type-arg]
    """A campaign of `numbers`, its rows launched for 2099 two at a time, its worker running."""
    from api import campaign_store
    from models.campaign import CampaignLaunchParams, CampaignPace
    from tests.test_campaign import ORG, create

    settings = settings_for_tests(task_queue="record-campaign")
    database = Database.for_url(settings.database_url)
    rows = [
        {"to_phone_number": n, "prompt_variables": {"name": f"Contact {i}"}} for i, n in enumerate(numbers)
    ]
    created, _ = create(database, settings, rows)
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at="2099-01-05T09:00:00Z")
    campaign_store.select_for_launch(database, ORG, created.id, launch)
    async with create_worker(env.client, task_queue="record-campaign", settings=settings):
        yield await start_campaign(
            env.client,
            created.id,
            ORG,
            "record-campaign",
            workflow_id=workflow_id,
            pace=CampaignPace(rows_per_second=0.01, burst=2),
            batch_size=2,
        )


async def campaign(env: WorkflowEnvironment) -> None:
    """A 6-row campaign launched two rows at a time, paused, resumed, then cancelled mid-launch."""
    from workflows.campaign import CampaignWorkflow

    numbers = [f"+3361234560{i}" for i in range(6)]
    async with launched_campaign(env, "campaign-replay_launch_pause_resume_cancel", numbers) as handle:
        progress = lambda: handle.query(CampaignWorkflow.get_progress)  # noqa: E731
        await eventually(progress, lambda p: p.started == 2)
        await handle.signal(CampaignWorkflow.pause)
        await eventually(progress, lambda p: p.orders_paused is True)
        await handle.signal(CampaignWorkflow.resume)
        await eventually(progress, lambda p: p.orders_paused is False)
        await handle.signal(CampaignWorkflow.cancel)
        await save(handle)


async def campaign_cancelled_by_temporal(env: WorkflowEnvironment) -> None:
    """A 4-row campaign whose two started orders wait, cancelled by Temporal (the Web UI's Request
    Cancellation): it cancels as its signal would."""
    from workflows.campaign import CampaignWorkflow

    workflow_id = "campaign-replay_cancelled_by_temporal"
    if (HISTORIES / f"{workflow_id}.json").exists():
        return
    async with launched_campaign(env, workflow_id, [f"+3361234561{i}" for i in range(4)]) as handle:
        await eventually(lambda: handle.query(CampaignWorkflow.get_progress), lambda p: p.started == 2)
        await handle.cancel()
        await save(handle)


async def semaphore_cancelled_by_temporal(env: WorkflowEnvironment, task_queue: str) -> None:
    """A key's semaphore cancelled by Temporal while one order holds its permit and one waits: it
    serves on (the waiter is called), then ends once idle."""
    client = env.client
    key = organization_key(DEFAULT_ORGANIZATION, "replay-cancelled")
    semaphore = client.get_workflow_handle(semaphore_workflow_id(key))
    if (HISTORIES / f"{semaphore.id}.json").exists():
        return
    concurrency = {"key": "replay-cancelled", "max": 1}
    orders = [
        await client.start_workflow(
            CallOrderWorkflow.run,
            scenario(
                "human",
                assistant={"call_retry_config": ALWAYS},
                concurrency=concurrency,
                metadata={"simulation": "human", "simulation.call_seconds": "3600"},  # the permit held
            ),
            id=f"call-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        for _ in range(2)
    ]
    await eventually(lambda: orders[1].query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
    await semaphore.cancel()
    for order in orders:
        await order.result()
    while (await semaphore.describe()).status == WorkflowExecutionStatus.RUNNING:
        await env.sleep(timedelta(minutes=1))  # it ends after 5 idle minutes
    await save(semaphore)


async def campaign_numbered_steering(env: WorkflowEnvironment) -> None:
    """A 2-row campaign steered with numbered signals (`campaigns.steered`): a pause, a resume stored
    after it, then a pause stored before that resume arriving last (not applied), then a cancel."""
    from api import campaign_store
    from models.campaign import CampaignLaunchParams, CampaignPace
    from tests.test_campaign import ORG, create
    from workflows.campaign import CampaignWorkflow

    settings = settings_for_tests(task_queue="record-campaign-steered")
    database = Database.for_url(settings.database_url)
    created, _ = create(database, settings, [{"to_phone_number": f"+3361234570{i}"} for i in range(2)])
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at="2099-01-05T09:00:00Z")
    campaign_store.select_for_launch(database, ORG, created.id, launch)
    async with create_worker(env.client, task_queue="record-campaign-steered", settings=settings):
        handle = await start_campaign(
            env.client,
            created.id,
            ORG,
            "record-campaign-steered",
            workflow_id="campaign-replay_numbered_steering",
            pace=CampaignPace(rows_per_second=0.01, burst=1),
            batch_size=1,
        )
        progress = lambda: handle.query(CampaignWorkflow.get_progress)  # noqa: E731
        await eventually(progress, lambda p: p.started == 1)
        await handle.signal(CampaignWorkflow.pause, 1)
        await eventually(progress, lambda p: p.orders_paused is True)
        await handle.signal(CampaignWorkflow.resume, 3)
        await handle.signal(CampaignWorkflow.pause, 2)  # older than the resume: not applied
        await eventually(progress, lambda p: p.orders_paused is False and p.steered == 3)
        await handle.signal(CampaignWorkflow.cancel)
        await save(handle)


async def campaign_in_flight(env: WorkflowEnvironment) -> None:
    """A 3-row campaign that may run one order at a time: it waits for each to end (max_in_flight)."""
    from api import campaign_store
    from models.campaign import CampaignLaunchParams
    from tests.test_campaign_in_flight import ORG, create

    settings = settings_for_tests(task_queue="record-campaign-in-flight")
    database = Database.for_url(settings.database_url)
    created = create(database, settings, 3)
    campaign_store.select_for_launch(database, ORG, created.id, CampaignLaunchParams(mode="ai_first"))
    async with create_worker(env.client, task_queue="record-campaign-in-flight", settings=settings):
        handle = await start_campaign(
            env.client,
            created.id,
            ORG,
            "record-campaign-in-flight",
            workflow_id="campaign-replay_in_flight_bound",
            batch_size=1,
            max_in_flight=1,
            in_flight_recheck_seconds=30,
        )
        await handle.result()
        await save(handle)


async def campaign_last_batch(env: WorkflowEnvironment) -> None:
    """A 2-row campaign whose one batch fills its bound (orders due in 2099): done, no waiting."""
    from api import campaign_store
    from models.campaign import CampaignLaunchParams
    from tests.test_campaign_in_flight import ORG, create

    settings = settings_for_tests(task_queue="record-campaign-last-batch")
    database = Database.for_url(settings.database_url)
    created = create(database, settings, 2)
    later = CampaignLaunchParams(mode="ai_first", scheduled_at="2099-01-05T09:00:00Z")
    campaign_store.select_for_launch(database, ORG, created.id, later)
    async with create_worker(env.client, task_queue="record-campaign-last-batch", settings=settings):
        handle = await start_campaign(
            env.client,
            created.id,
            ORG,
            "record-campaign-last-batch",
            workflow_id="campaign-replay_last_batch_fills_the_bound",
            batch_size=2,
            max_in_flight=2,
        )
        await save(handle)
        for row, _ in campaign_store.rows_with_calls(database, created.id):
            await env.client.get_workflow_handle(f"call-{row.call_id}").terminate("recorded")


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=shutil.which("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    refusals = [web.json_response({"error": "busy"}, status=503)]

    async def hook(request: web.Request) -> web.Response:
        return refusals.pop() if refusals else web.json_response({"ok": True})

    hold_the_providers()
    settings = settings_for_tests(allow_private_urls=True, webhook_secret="whsec_replay")
    async with serve(lambda app: app.router.add_post("/hook", hook)) as base:
        async with create_worker(env.client, task_queue="record", settings=settings):
            await call_orders(env.client, "record")
            await semaphore_continued_as_new(env.client, "record")
            await semaphore_with_a_full_queue(env.client, "record")
            await semaphore_asked_together(env.client, "record", settings)
            await notifications(env.client, "record", base)
            await contact_checked_before_a_retry(env.client, "record")
            await cancelled_while_ringing(env.client, "record", CANCELLED_WHILE_RINGING)
            await cancelled_while_ringing(env.client, "record", CANCELLED_WHILE_RINGING_SINCE_HANG_UP)
            await notified_in_batches(env.client, "record")
            await contact_checked_after_the_permit(env.client, "record")
            await dialed_too_late(env.client, "record")
            await listed_since_accepted(env.client, "record")
            await semaphore_cancelled_by_temporal(env, "record")
            semaphore = env.client.get_workflow_handle(semaphore_workflow_id("replay"))
            if not (HISTORIES / f"{semaphore.id}.json").exists():
                while (await semaphore.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await env.sleep(timedelta(minutes=1))  # the semaphore ends after 5 idle minutes
                await save(semaphore)
    await campaign(env)
    await campaign_in_flight(env)
    await campaign_last_batch(env)
    await campaign_numbered_steering(env)
    await campaign_cancelled_by_temporal(env)
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())

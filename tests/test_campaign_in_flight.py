"""A campaign never has more than `max_in_flight` of its orders running (time-skipping, real orders).

Past the bound it waits for orders to end before starting more, so a long list due at once does not
queue every row at its concurrency key's semaphore (whose queue travels in one payload).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from api import campaign_stats
from api import campaign_store as store
from api.store import save_assistant
from models import Call
from models.campaign import CampaignCreateParams, CampaignLaunchParams, CampaignPace
from models.tables import AssistantRecord, CallOrderRecord, Database
from tests.helpers import current_details, eventually, settings_for_tests, start_campaign
from tests.test_call_order_concurrency import peak_overlap
from workers import create_worker
from workflows.call_order import CallOrderWorkflow
from workflows.campaign import RUN_OF_ITS_OWN, CampaignWorkflow

ORG = "org_campaign_in_flight"
ALWAYS_OPEN = {
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [
        {"calling_window_start_time": "00:00", "calling_window_end_time": "23:59", "retry_delay_seconds": 60}
    ],
    "max_retry_attempts": 1,
}


def create(database: Database, settings: Any, rows: int, call_seconds: str = "20") -> Any:
    assistant = save_assistant(
        database,
        AssistantRecord(
            id=str(uuid.uuid4()),
            organization_id=ORG,
            name="Bounded",
            config={"prompt": "Offer {{name}} a demo.", "structured_output_config": []},
        ),
    )
    contacts = [
        {
            "to_phone_number": f"+3361299{i:04d}",
            "prompt_variables": {"name": f"Contact {i}"},
            "metadata": {"simulation": "human:interested", "simulation.call_seconds": call_seconds},
        }
        for i in range(rows)
    ]
    params = CampaignCreateParams.model_validate(
        {
            "name": "Bounded outreach",
            "assistant_id": assistant.id,
            "contacts": contacts,
            "call_retry_config": ALWAYS_OPEN,
            "max_concurrent_calls": 2,
        }
    )
    campaign, skipped = store.create_campaign(database, settings, ORG, params)
    assert skipped == []
    return campaign


def launched_for_2099(settings: Any, rows: int) -> tuple[Database, Any]:
    """A campaign of `rows` rows launched for 2099: its orders wait, so its launch shows alone."""
    database = Database.for_url(settings.database_url)
    campaign = create(database, settings, rows)
    later = CampaignLaunchParams(mode="ai_first", scheduled_at="2099-01-05T09:00:00Z")
    assert store.select_for_launch(database, ORG, campaign.id, later).launched == rows
    return database, campaign


async def start_bounded(client: Any, campaign_id: str, task_queue: str, *, batch_size: int) -> Any:
    """The campaign with at most 4 orders in flight, recounted every 30 s, paced fast."""
    return await start_campaign(
        client,
        campaign_id,
        ORG,
        task_queue,
        pace=CampaignPace(rows_per_second=100, burst=100),
        batch_size=batch_size,
        max_in_flight=4,
        in_flight_recheck_seconds=30,
    )


async def test_a_campaign_waits_for_orders_to_end_past_max_in_flight(time_env, task_queue) -> None:
    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign = create(database, settings, 12)
    assert (
        store.select_for_launch(database, ORG, campaign.id, CampaignLaunchParams(mode="ai_first")).launched
        == 12
    )

    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        handle = await start_bounded(client, campaign.id, task_queue, batch_size=3)
        progress = await handle.result()
        for _ in range(200):  # short sleeps: the test server skips time only while it is idle
            if campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id)).finished:
                break
            await time_env.sleep(timedelta(minutes=1))
        lifetimes: list[tuple[datetime, datetime]] = []
        calls: list[Call] = []
        for row, _ in store.rows_with_calls(database, campaign.id):
            order = client.get_workflow_handle(f"call-{row.call_id}", result_type=Call)
            calls.append(await order.result())
            started = (await order.fetch_history()).events[0].event_time.ToDatetime(tzinfo=UTC)
            lifetimes.append((started, calls[-1].updated_at))  # until its final state was stored
        history = await handle.fetch_history()

    assert progress.started == 12 and progress.already_started == 0
    assert all(call.status == "completed" for call in calls)
    assert peak_overlap(lifetimes) == 4  # the bound is reached and never passed
    counts = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "campaign_orders_in_flight"
    ]
    assert counts  # it waited and looked again
    # no patch marker unless cancelled by Temporal: a worker of the version before replays it (rolling
    # upgrades); one recorded at every batch failed every campaign on such a worker
    assert not [e for e in history.events if e.HasField("marker_recorded_event_attributes")]


async def test_a_campaign_whose_last_batch_reaches_max_in_flight_is_done_without_waiting(
    time_env, task_queue
) -> None:
    """Nothing is left to start: the campaign ends its launch at once, though its orders (due in 2099)
    still run and fill the bound. (It used to wait, phase "waiting", until some of them ended.)"""
    settings = settings_for_tests(task_queue=task_queue)
    database, campaign = launched_for_2099(settings, 4)

    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        handle = await start_bounded(client, campaign.id, task_queue, batch_size=2)
        progress = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()
        orders = [
            client.get_workflow_handle(f"call-{row.call_id}")
            for row, _ in store.rows_with_calls(database, campaign.id)
        ]
        for order in orders:  # leave no 2099 timer behind on this module's server
            await order.terminate("test over")

    assert progress.started == 4 and progress.phase == "done"
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert activities == ["campaign_launch_rows", "campaign_launch_rows"]  # two batches, no empty third


async def test_the_web_ui_current_details_follow_each_batch(time_env, task_queue) -> None:
    """Every batch shows in the campaign's current details, not only a change of phase (a new run
    after continue-as-new, in the same phase, showed none)."""
    settings = settings_for_tests(task_queue=task_queue)
    database, campaign = launched_for_2099(settings, 3)

    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        handle = await start_campaign(
            client,
            campaign.id,
            ORG,
            task_queue,
            pace=CampaignPace(rows_per_second=0.01, burst=1),  # one order, then 100 s until the next
            batch_size=1,
        )
        await eventually(lambda: handle.query(CampaignWorkflow.get_progress), lambda p: p.started == 1)
        launching = await current_details(handle)
        await handle.signal(CampaignWorkflow.cancel)  # its order too: no 2099 timer stays behind
        progress = await asyncio.wait_for(handle.result(), timeout=60)
        cancelled = await current_details(handle)

    assert launching == "**launching**: 1 order started, cursor at row #0"
    assert progress.started == 1 and cancelled.startswith("**done, cancelled**: 1 order started")


async def test_a_run_that_started_no_order_says_so_in_its_details(time_env, task_queue) -> None:
    """A run with no row pending (a pause or resume after the launch's run ended starts one) showed
    "0 orders started, cursor at row #-1", and `outdial campaign status` called it the latest launch;
    then "started no order", of a campaign whose launch had started some: it says this run started
    none, each run counting its own."""
    settings = settings_for_tests(task_queue=task_queue)
    campaign = create(Database.for_url(settings.database_url), settings, 1)  # created, never launched
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start_campaign(time_env.client, campaign.id, ORG, task_queue)
        progress = await asyncio.wait_for(handle.result(), timeout=60)
        details = await current_details(handle)
    assert (progress.started, progress.cursor) == (0, -1)
    assert details == f"**done**: no row pending; {RUN_OF_ITS_OWN}"
    paused = await start_campaign(  # a pause's run: it read "0 orders started, cursor at row #-1"
        time_env.client, campaign.id, ORG, task_queue, workflow_id=f"paused-{campaign.id}", paused=True
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        await eventually(lambda: current_details(paused), lambda d: d.startswith("**paused**"))
        assert await current_details(paused) == "**paused**: this run has started no order yet"
        await paused.terminate()


async def test_cancelling_a_campaign_whose_order_was_terminated_in_a_call_ends(time_env, task_queue) -> None:
    """An order terminated during a call (an operator's `temporal workflow terminate`) keeps its last
    stored status, `calling`. The cancel counted it as a call to wait for, and asked it again every 30 s,
    forever: a signal to it finds no workflow, so it is over."""
    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign = create(database, settings, 1, call_seconds="3600")
    assert (
        store.select_for_launch(database, ORG, campaign.id, CampaignLaunchParams(mode="ai_first")).launched
        == 1
    )
    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        launching = await start_campaign(
            client, campaign.id, ORG, task_queue, pace=CampaignPace(rows_per_second=100, burst=100)
        )
        await launching.result()
        [(row, _)] = store.rows_with_calls(database, campaign.id)
        order = client.get_workflow_handle(f"call-{row.call_id}")

        def stored_status() -> str:
            with database.session() as session:
                return session.get(CallOrderRecord, row.call_id).status  # type: ignore[union-attr]

        await eventually(lambda: asyncio.to_thread(stored_status), lambda status: status == "calling")
        await order.terminate("stuck, says the operator")
        store.set_flags(database, store.get_campaign(database, ORG, campaign.id), cancelled=True)
        cancelling = await start_campaign(
            client, campaign.id, ORG, task_queue, signal="cancel", cancel_recheck_seconds=30
        )
        progress = await asyncio.wait_for(cancelling.result(), timeout=60)  # before: never
    assert progress.cancelled


async def test_a_cancel_reaches_an_order_started_whose_own_row_is_not_written_yet(
    time_env, task_queue
) -> None:
    """A delete racing a launch batch removed the placeholder rows of the rows being started; the cancel
    looked for orders through their rows, missed those whose own first write had not landed yet, and
    they called after the campaign was gone."""
    settings = settings_for_tests(task_queue=task_queue)
    database, campaign = launched_for_2099(settings, 1)
    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        launching = await start_bounded(client, campaign.id, task_queue, batch_size=10)
        await launching.result()
        [(row, _)] = store.rows_with_calls(database, campaign.id)
        order = client.get_workflow_handle(f"call-{row.call_id}")
        await eventually(lambda: order.query("status"), lambda status: status == "scheduled")
        with database.session() as session:  # as the delete left it: the order's row not written yet
            session.delete(session.get(CallOrderRecord, row.call_id))
            session.commit()
        store.set_flags(database, store.get_campaign(database, ORG, campaign.id), cancelled=True)
        cancelling = await start_campaign(client, campaign.id, ORG, task_queue, signal="cancel")
        progress = await asyncio.wait_for(cancelling.result(), timeout=60)
        # before: it went on waiting for 2099, and would have called then
        await eventually(lambda: order.query("status"), lambda status: status == "cancelled")
    assert progress.cancelled


async def test_temporals_cancellation_of_a_campaign_means_its_cancel(time_env, task_queue) -> None:
    """The Web UI's "Request Cancellation" (or `temporal workflow cancel`) ended the run: the campaign
    stayed `running`, its rows pending for good, its orders calling on."""
    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign = create(database, settings, 6, call_seconds="60")
    # its orders wait for tomorrow: none is in a call the cancel waits for (time-skipping stalled there)
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at=datetime.now(UTC) + timedelta(days=1))
    assert store.select_for_launch(database, ORG, campaign.id, launch).launched == 6
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start_campaign(  # two rows now, then one every 1,000 s
            time_env.client, campaign.id, ORG, task_queue, pace=CampaignPace(rows_per_second=0.001, burst=2)
        )
        await eventually(lambda: handle.query(CampaignWorkflow.get_progress), lambda p: p.started == 2)
        await handle.cancel()
        progress = await asyncio.wait_for(handle.result(), timeout=60)
        assert progress.cancelled and progress.started == 2
        record = store.get_campaign(database, ORG, campaign.id)
        summary = campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id))
        assert record.is_cancelled and campaign_stats.campaign_status(record, summary) != "running"
        rows = store.rows_with_calls(database, campaign.id)
        assert sorted(row.state for row, _ in rows) == ["cancelled"] * 4 + ["launched"] * 2
        for row, _ in rows:  # its orders were told, as by the cancel signal
            if row.state == "launched":
                order = time_env.client.get_workflow_handle(f"call-{row.call_id}")
                await eventually(lambda: order.query(CallOrderWorkflow.status), lambda s: s == "cancelled")  # noqa: B023


async def test_temporals_cancellation_during_a_batch_reaches_the_batchs_orders(
    time_env, task_queue, monkeypatch
) -> None:
    """Cancelled by Temporal while a batch's orders were being started, the campaign cancelled at once:
    the batch's rows, not launched yet, were marked cancelled, and their orders, started then, called
    on, out of any cancel's reach. The batch ends first now, and its orders are cancelled."""
    import threading

    from temporalio.api.enums.v1 import EventType

    import activities.campaigns

    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign = create(database, settings, 3, call_seconds="60")
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at=datetime.now(UTC) + timedelta(days=1))
    assert store.select_for_launch(database, ORG, campaign.id, launch).launched == 3
    entered, released = threading.Event(), threading.Event()
    pending_rows = activities.campaigns.pending_rows

    def held(*args: Any) -> Any:
        entered.set()
        released.wait(30)
        return pending_rows(*args)

    monkeypatch.setattr(activities.campaigns, "pending_rows", held)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start_campaign(time_env.client, campaign.id, ORG, task_queue)
        assert await asyncio.to_thread(entered.wait, 30)
        await handle.cancel()

        async def cancel_seen() -> bool:  # the workflow has run a task since the request
            events = [e.event_type for e in (await handle.fetch_history()).events]
            requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
            return (
                requested in events
                and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[events.index(requested) :]
            )

        await eventually(cancel_seen, bool)
        released.set()
        progress = await asyncio.wait_for(handle.result(), timeout=60)
        assert progress.cancelled and progress.started == 3
        rows = store.rows_with_calls(database, campaign.id)
        assert [row.state for row, _ in rows] == ["launched"] * 3
        for row, _ in rows:
            order = time_env.client.get_workflow_handle(f"call-{row.call_id}")
            await eventually(lambda: order.query(CallOrderWorkflow.status), lambda s: s == "cancelled")  # noqa: B023

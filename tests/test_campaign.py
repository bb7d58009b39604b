"""Campaigns on real call orders (time-skipping): a 300-row list across three timezones, max 5 at once.

One launch is followed from start to end: every attempt falls inside its own row's calling window,
never more than 5 calls at once (and 5 are reached), a pause in the middle holds every new dial until
the resume, a forced continue-as-new every few pages loses and duplicates no row, bad rows are
skipped and reported, and the statistics (from the database) match the orders' final Calls.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from api import campaign_stats
from api import campaign_store as store
from api.store import save_assistant
from models import Call, CallCampaign
from models.campaign import (
    CampaignCreateParams,
    CampaignLaunchParams,
    CampaignPace,
    CampaignProgress,
)
from models.retry import CallRetryConfig
from models.tables import (
    AssistantRecord,
    CallOrderRecord,
    CampaignRowRecord,
    Database,
    DoNotContactRecord,
    utcnow,
)
from tests.helpers import current_details, eventually, settings_for_tests, start_campaign
from tests.test_call_order_concurrency import peak_overlap
from workers import create_worker
from workflows import schedule
from workflows.campaign import CampaignWorkflow

ORG = "org_campaign_test"
RETRY = CallRetryConfig.model_validate(
    {
        "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        "calling_windows": [
            {
                "calling_window_start_time": "09:00",
                "calling_window_end_time": "12:00",
                "retry_delay_seconds": 1800,
            },
            {
                "calling_window_start_time": "14:00",
                "calling_window_end_time": "17:00",
                "retry_delay_seconds": 3600,
            },
        ],
        "max_retry_attempts": 3,
    }
)
CALLEES = ["human:interested", "voicemail,human:completed", "human", "busy,human:not_interested", "no_answer"]
BLOCKED = "+33612340999"


def contacts(count: int) -> list[dict[str, Any]]:
    """A third each in Paris, New York and Tokyo (zones from the numbers), then three bad rows."""
    prefixes = ["+3361234", "+1212734", "+8131234"]  # + 4 digits: valid numbers of each zone
    rows = []
    for i in range(count):
        number = f"{prefixes[i % 3]}{i:04d}"
        rows.append(
            {
                "to_phone_number": number,
                "prompt_variables": {"name": f"Contact {i}", "rank": i},
                "metadata": {"simulation": CALLEES[i % len(CALLEES)], "simulation.call_seconds": "20"},
            }
        )
    rows += [
        {"to_phone_number": "+1555", "prompt_variables": {"name": "Invalid"}},
        {"to_phone_number": rows[0]["to_phone_number"], "prompt_variables": {"name": "Duplicate"}},
        {"to_phone_number": BLOCKED, "prompt_variables": {"name": "Asked not to be called"}},
    ]
    return rows


def create(database: Database, settings: Any, rows: list[dict[str, Any]]):
    assistant = save_assistant(
        database,
        AssistantRecord(
            id=str(uuid.uuid4()),
            organization_id=ORG,
            name="Campaigner",
            config={"prompt": "Offer {{name}} a demo.", "structured_output_config": []},
        ),
    )
    with database.session() as session:
        session.add(
            DoNotContactRecord(organization_id=ORG, phone_number=BLOCKED, call_id="c-0", recorded_at=utcnow())
        )
        session.commit()
    params = CampaignCreateParams.model_validate(
        {
            "name": "Spring outreach",
            "assistant_id": assistant.id,
            "contacts": rows,
            "call_retry_config": RETRY.model_dump(),
            "max_concurrent_calls": 5,
        }
    )
    return store.create_campaign(database, settings, ORG, params)


async def test_a_300_row_campaign_across_three_timezones(time_env, task_queue) -> None:
    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign, skipped = create(database, settings, contacts(300))
    assert [(s.row_index, s.reason) for s in skipped] == [
        (300, "invalid_phone_number"),
        (301, "duplicate_phone_number"),
        (302, "do_not_contact"),
    ]
    launch = store.select_for_launch(database, ORG, campaign.id, CampaignLaunchParams(mode="ai_first"))
    assert launch.launched == 300

    client = time_env.client
    async with create_worker(client, task_queue=task_queue, settings=settings):
        handle = await start_campaign(
            client,
            campaign.id,
            ORG,
            task_queue,
            pace=CampaignPace(rows_per_second=50, burst=50),
            batch_size=25,
            continue_as_new_after_events=30,  # forced: a new run every few batches
        )
        progress = await handle.result()  # every row started
        launched_at = await time_env.get_current_time()

        # Mid-way (a good share of the calls made), pause: calls in progress finish, no new dial
        # until the resume. Short sleeps: the test server skips time only when it is idle.
        for _ in range(600):
            await time_env.sleep(timedelta(minutes=5))
            if campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id)).attempts >= 100:
                break
        paused = await start_campaign(
            client, campaign.id, ORG, task_queue, signal="pause", orders_paused=None
        )
        await eventually(
            lambda: paused.query(CampaignWorkflow.get_progress), lambda p: p.orders_paused is True
        )
        paused_at = await time_env.get_current_time()
        midway = campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id))
        for _ in range(10):
            await time_env.sleep(timedelta(hours=1))
        await paused.signal(CampaignWorkflow.resume)
        resumed_at = await time_env.get_current_time()
        assert (await paused.result()).orders_paused is False

        for _ in range(3000):  # short sleeps again (each RPC must end within 60 s), until all ended
            await time_env.sleep(timedelta(minutes=5))
            if campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id)).finished:
                break
        calls: list[Call] = [
            await client.get_workflow_handle(f"call-{row.call_id}", result_type=Call).result()
            for row, _ in store.rows_with_calls(database, campaign.id)
            if row.call_id
        ]
        await time_env.sleep(timedelta(minutes=6))  # the semaphore ends while the worker runs

    # Launched in several runs, each row started exactly once.
    assert isinstance(progress, CampaignProgress)
    assert progress.runs >= 3 and progress.started == 300 and progress.already_started == 0
    assert progress.skipped == {}  # bad rows were caught at creation already
    assert len({call.id for call in calls}) == 300
    with database.session() as session:
        query = select(CampaignRowRecord.state).where(CampaignRowRecord.campaign_id == campaign.id)
        states = Counter(session.scalars(query))
    assert states == {"launched": 300, "skipped": 3}

    # Each order is the row's own: its campaign, its number's zone, its window, its retries.
    attempts = [(call, attempt) for call in calls for attempt in call.call_attempts]
    assert all(call.campaign == CallCampaign(id=campaign.id, name="Spring outreach") for call in calls)
    for call, attempt in attempts:
        zones = schedule.resolve_timezones(call.to_phone_number)
        assert schedule.is_allowed(attempt.started_at, RETRY, zones), (
            call.to_phone_number,
            attempt.started_at,
        )
    zones_called = Counter(schedule.resolve_timezones(call.to_phone_number)[0] for call in calls)
    assert zones_called == {"Europe/Paris": 100, "America/New_York": 100, "Asia/Tokyo": 100}
    assert peak_overlap([(a.started_at, a.ended_at) for _, a in attempts]) == 5

    # The pause held every new dial; the campaign was really mid-way.
    assert 0 < midway.attempts and not midway.finished and paused_at > launched_at
    assert not [a for _, a in attempts if paused_at < a.started_at < resumed_at]
    assert [a for _, a in attempts if a.started_at > resumed_at]

    # Statistics (from the database) match the final Calls.
    summary = campaign_stats.summarize(campaign_stats.row_facts(database, campaign.id))
    assert summary.by_status == Counter(call.status for call in calls) + Counter(skipped=3)
    assert summary.by_outcome == Counter(call.outcome for call in calls if call.outcome)
    assert summary.attempts == len(attempts) == sum(call.calls_count for call in calls)
    humans = sum(any(a.result == "human" for a in call.call_attempts) for call in calls)
    assert summary.reached_human == humans == 240  # 4 callees in 5 reach a human
    assert summary.reached_human_rate == pytest.approx(240 / 300)
    assert summary.row_stats.model_dump() == {
        "calling": 0,
        "completed": 300,
        "failed": 0,
        "not_launched": 0,
        "pending": 0,
        "retry": 0,
        "skipped": 3,
        "total": 303,
    }
    assert summary.finished


async def test_a_campaign_ends_in_the_state_stored_last_whatever_order_its_signals_arrive_in(
    time_env, task_queue
) -> None:
    """A resume stored after a pause may reach the workflow first: the pause, older, is not applied."""
    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(2))
    handle = await start_campaign(
        time_env.client, campaign.id, ORG, task_queue, signal="pause", paused=True, steered=1
    )
    await handle.signal(CampaignWorkflow.resume, 3)  # stored third
    await handle.signal(CampaignWorkflow.pause, 2)  # stored second, arrived last
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        progress = await eventually(  # resumed: it had no row to launch, so it is done
            lambda: handle.query(CampaignWorkflow.get_progress), lambda p: p.phase == "done"
        )
    assert (progress.paused, progress.steered) == (False, 3)


def test_a_number_with_its_trunk_zero_is_the_same_number() -> None:
    """`+330612345678` (contact lists keep the 0) is `+33612345678`: a repeat, and listed do-not-contact
    as the other is; both were kept as different rows and called (the notifications audit)."""
    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    blocked_with_zero = BLOCKED.replace("+33", "+330", 1)
    campaign, skipped = create(
        database,
        settings,
        [
            {"to_phone_number": "+33612349001"},
            {"to_phone_number": "+330612349001"},
            {"to_phone_number": blocked_with_zero},
        ],
    )
    assert [(s.row_index, s.reason) for s in skipped] == [
        (1, "duplicate_phone_number"),
        (2, "do_not_contact"),
    ]
    [(row, call)] = [(row, call) for row, call in store.rows_with_calls(database, campaign.id) if call]
    assert row.phone_number == call.to_phone_number == "+33612349001"


class TemporalDownOnce:
    """The one client method steering uses (signal-with-start): down at first, then up; the signals
    it took, a lost one included."""

    def __init__(self) -> None:
        self.signals: list[str] = []

    async def start_workflow(self, *args: Any, start_signal: str, **kwargs: Any) -> None:
        from temporalio.service import RPCError, RPCStatusCode

        if not self.signals:
            self.signals.append("lost")
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        self.signals.append(start_signal)


async def test_a_cancel_recorded_when_temporal_could_not_be_reached_is_delivered_by_its_retry() -> None:
    """The first cancel is recorded, then its signal fails (503, which the official client retries):
    the retry signals it again instead of answering 409 (the campaign then called every row)."""
    from api.campaigns import steer_campaign
    from api.errors import ApiError

    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(3))
    temporal = TemporalDownOnce()
    steer = (temporal, settings, database, ORG, campaign.id)
    with pytest.raises(ApiError) as unavailable:
        await steer_campaign(*steer, "cancel")  # type: ignore[arg-type]
    assert unavailable.value.status == 503 and store.get_campaign(database, ORG, campaign.id).is_cancelled
    await steer_campaign(*steer, "cancel")  # type: ignore[arg-type]
    assert temporal.signals == ["lost", "cancel"]
    with pytest.raises(ApiError) as refused:
        await steer_campaign(*steer, "resume")  # type: ignore[arg-type]
    assert refused.value.status == 409 and temporal.signals == ["lost", "cancel"]


@pytest.mark.parametrize("signal", ["pause", "resume"])
async def test_a_pause_or_resume_temporal_could_not_take_is_not_shown_as_done(signal: str) -> None:
    """A pause answered 503 was stored all the same: the campaign read `paused` for good while every
    order called on. Its retry (the official client's) stores and signals it."""
    from api.campaigns import steer_campaign
    from api.errors import ApiError

    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(3))
    if signal == "resume":
        store.set_flags(database, campaign, paused=True)
    before = store.get_campaign(database, ORG, campaign.id).paused
    temporal = TemporalDownOnce()
    steer = (temporal, settings, database, ORG, campaign.id)
    with pytest.raises(ApiError) as unavailable:
        await steer_campaign(*steer, signal)  # type: ignore[arg-type]
    assert unavailable.value.status == 503
    assert store.get_campaign(database, ORG, campaign.id).paused == before
    await steer_campaign(*steer, signal)  # type: ignore[arg-type]
    assert temporal.signals == ["lost", signal]
    assert store.get_campaign(database, ORG, campaign.id).paused == (signal == "pause")


async def test_a_delete_whose_cancel_could_not_be_signalled_cancels_on_its_retry() -> None:
    """A delete records the cancel, then its signal fails (503, retried by the official client): the
    retry skipped the signal, deleted the campaign, and its waiting orders called all the same."""
    from api.campaigns import delete_campaign_of
    from api.errors import ApiError

    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(3))
    temporal = TemporalDownOnce()
    deleting = (temporal, settings, database, ORG, campaign.id)
    with pytest.raises(ApiError) as unavailable:
        await delete_campaign_of(*deleting)  # type: ignore[arg-type]
    assert unavailable.value.status == 503 and store.get_campaign(database, ORG, campaign.id).is_cancelled
    await delete_campaign_of(*deleting)  # type: ignore[arg-type]
    assert temporal.signals == ["lost", "cancel"]
    with pytest.raises(ApiError) as gone:
        store.get_campaign(database, ORG, campaign.id)
    assert gone.value.status == 404


async def test_a_batch_whose_worker_died_is_tried_again_within_seconds(
    time_env, task_queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try of the batch starts its orders, then goes silent as a killed worker does (before
    marking its rows): the next try starts within the heartbeat timeout, not after the batch's 2-minute
    timeout, finds the orders started and counts them; the Web UI shows them all started."""
    import threading

    from activities import campaigns as launching

    settings = settings_for_tests(task_queue=task_queue)
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(4))
    store.select_for_launch(database, ORG, campaign.id, CampaignLaunchParams(mode="ai_first"))
    real_mark, released, tries = launching.mark_launched, threading.Event(), []

    def dies_the_first_time(*args: Any) -> None:
        tries.append(None)
        if len(tries) == 1:
            released.wait(60)  # the dead worker's thread, let go when the test ends
            raise RuntimeError("this worker was killed")
        real_mark(*args)

    monkeypatch.setattr(launching, "mark_launched", dies_the_first_time)
    client = time_env.client
    try:
        async with create_worker(client, task_queue=task_queue, settings=settings):
            began = await time_env.get_current_time()
            handle = await start_campaign(client, campaign.id, ORG, task_queue, launch_heartbeat_seconds=2)
            progress = await handle.result()
            took = await time_env.get_current_time() - began
            details = await current_details(handle)
    finally:
        released.set()
    assert len(tries) == 2 and took < timedelta(seconds=30)  # the batch's own timeout is 2 minutes
    assert (progress.started, progress.already_started) == (0, 4)
    assert "4 orders started" in details


def test_rows_launched_and_waiting_their_turn_count_pending_by_status_as_in_row_stats() -> None:
    """A launched row not started yet: its call still says not_launched, but the row is pending (a
    paused campaign's launch showed `row_stats.pending` 3 and `by_status` not_launched 3)."""
    from api.campaign_stats import RowFacts

    rows = [
        RowFacts(row_index=0, phone_number="+33612345601", state="pending", status="not_launched"),
        RowFacts(row_index=1, phone_number="+33612345602", state="launched", status="scheduled"),
        RowFacts(row_index=2, phone_number="+33612345603", state="not_launched", status="not_launched"),
        RowFacts(row_index=3, phone_number="+33612345604", state="cancelled", status="not_launched"),
        # started, its order's first write not landed yet (minutes, behind a worker's backlog)
        RowFacts(row_index=4, phone_number="+33612345605", state="launched", status="not_launched"),
    ]
    summary = campaign_stats.summarize(rows)
    assert summary.by_status == Counter(pending=2, scheduled=1, not_launched=1, cancelled=1)
    assert (summary.row_stats.pending, summary.row_stats.not_launched) == (3, 1)  # scheduled: pending too


def test_two_patches_of_an_assistant_at_once_leave_its_rows_on_the_version_stored_last() -> None:
    """Each refresh merged its version into the rows as read before the other's wrote them: the rows
    could show (and, the assistant deleted, run) the version that lost. They take turns under the
    campaign's lock now, each reading the assistant then."""
    import threading

    from activities.persistence import find_assistant
    from api.assistants import _update

    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    campaign, _ = create(database, settings, contacts(1000))
    assistant_id = campaign.assistant_id
    for attempt in range(3):
        barrier = threading.Barrier(2)

        def patch(prompt: str, together: threading.Barrier) -> None:
            together.wait()
            _update(database, settings, ORG, assistant_id, {"prompt": prompt})

        racing = [threading.Thread(target=patch, args=(f"{side}{attempt}", barrier)) for side in "AB"]
        for thread in racing:
            thread.start()
        for thread in racing:
            thread.join()
        stored = find_assistant(database, ORG, assistant_id).config["prompt"]  # type: ignore[union-attr]
        with database.session() as session:
            shown = {call["assistant"]["prompt"] for call in session.scalars(select(CallOrderRecord.call))}
        assert shown == {stored}, attempt

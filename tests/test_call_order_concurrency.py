"""Concurrency keys on real call orders (time-skipping): never more than `max` calls at once, permits
released between retries, given back when the window closed, reclaimed from a terminated order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from models import Call, CallCreateParams
from tests.helpers import current_details, eventually, settings_for_tests
from workers import create_worker
from workflows import workflow_runner
from workflows.call_order import DEFAULT_ORGANIZATION, CallOrderWorkflow
from workflows.concurrency import (
    DEFER_SIGNAL,
    ConcurrencySemaphoreWorkflow,
    organization_key,
    semaphore_workflow_id,
)

ALL_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def order(
    key: str, max_: int, simulation: str, call_seconds: int, window: tuple[str, str] = ("00:00", "23:59")
):
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": "Hello",
                "max_call_duration_secs": 86400,  # the calls last as long as the test says
                "call_retry_config": {
                    "timezone": "UTC",
                    "allowed_days": ALL_DAYS,
                    "calling_windows": [
                        {
                            "calling_window_start_time": window[0],
                            "calling_window_end_time": window[1],
                            "retry_delay_seconds": 600,
                        }
                    ],
                },
            },
            "concurrency": {"key": key, "max": max_},
            "metadata": {"simulation": simulation, "simulation.call_seconds": str(call_seconds)},
        }
    )


async def start(client, task_queue: str, params: CallCreateParams) -> WorkflowHandle[Any, Call]:
    return await client.start_workflow(
        CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
    )


def semaphore_of(key: str) -> str:
    """The semaphore of an order started without an organization (memo): the local one's."""
    return semaphore_workflow_id(organization_key(DEFAULT_ORGANIZATION, key))


async def semaphore_ended(env, key: str) -> None:
    """An idle semaphore ends itself after its idle timeout (300 s); waiting for it also keeps its
    timers out of the next test. A handle from get_workflow_handle does not skip time by itself."""
    await env.sleep(timedelta(minutes=6))
    state = await env.client.get_workflow_handle(semaphore_of(key)).result()
    assert state["holders"] == [] and state["waiters"] == []


def peak_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    depth = peak = 0
    for _, step in edges:  # ends sort before starts at the same instant
        depth += step
        peak = max(peak, depth)
    return peak


async def test_sixty_orders_never_exceed_max_three(time_env, task_queue):
    key = f"team-{uuid.uuid4()}"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handles = [
            await start(
                time_env.client,
                task_queue,
                order(key, 3, "voicemail,human" if i % 4 == 0 else "human", call_seconds=120 + 30 * (i % 7)),
            )
            for i in range(60)
        ]
        await eventually(
            lambda: handles[-1].query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling"
        )
        calls = [await handle.result() for handle in handles]  # one result() at a time (FIELD-NOTES)
        await semaphore_ended(time_env, key)

    attempts = [attempt for call in calls for attempt in call.call_attempts]
    assert all(call.status == "completed" for call in calls)
    assert len(attempts) == 60 + 15  # every 4th order retried after voicemail
    assert peak_overlap([(a.started_at, a.ended_at) for a in attempts]) == 3


async def test_a_permit_granted_after_the_window_closed_goes_back(time_env, task_queue):
    key = f"late-{uuid.uuid4()}"
    now = await time_env.get_current_time()
    window = (now.strftime("%H:%M"), (now + timedelta(minutes=30)).strftime("%H:%M"))
    if window[1] <= window[0]:  # too close to midnight UTC for a same-day window: move the clock
        await time_env.sleep(timedelta(hours=1))
        now = await time_env.get_current_time()
        window = (now.strftime("%H:%M"), (now + timedelta(minutes=30)).strftime("%H:%M"))
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        long_call = await start(time_env.client, task_queue, order(key, 1, "human", 3600, window))
        await eventually(lambda: long_call.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiting = await start(time_env.client, task_queue, order(key, 1, "human", 60, window))
        await eventually(lambda: waiting.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        first = await long_call.result()
        second = await waiting.result()
        await semaphore_ended(time_env, key)

    freed_at = first.call_attempts[0].ended_at
    assert freed_at - first.call_attempts[0].started_at >= timedelta(hours=1)  # past the 30-minute window
    attempt = second.call_attempts[0]
    assert second.calls_count == 1 and attempt.started_at - freed_at > timedelta(hours=20)
    assert attempt.started_at.strftime("%H:%M") == window[0]  # the next day's window opening


async def test_terminated_holder_loses_its_permit_within_the_liveness_bound(time_env, task_queue):
    key = f"crash-{uuid.uuid4()}"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        holder = await start(time_env.client, task_queue, order(key, 1, "human", 3600))
        await eventually(lambda: holder.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiter = await start(time_env.client, task_queue, order(key, 1, "human", 60))
        await eventually(lambda: waiter.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        await holder.terminate("simulated crash")
        terminated_at = await time_env.get_current_time()
        call = await waiter.result()
        semaphore = time_env.client.get_workflow_handle(semaphore_of(key))
        holders = await semaphore.query(ConcurrencySemaphoreWorkflow.holders)
        await semaphore_ended(time_env, key)

    assert call.status == "completed"
    assert call.call_attempts[0].started_at - terminated_at <= timedelta(seconds=31)  # bound: 30 s
    assert holders == []


async def test_temporals_cancellation_of_a_semaphore_leaves_no_order_waiting(time_env, task_queue):
    """The Web UI's "Request Cancellation" of `concurrency-<org>:<key>` ended it CANCELED: the order
    waiting in its queue stayed `queued_for_calling` for good. It serves on, and ends once idle."""
    key = f"cancelled-{uuid.uuid4()}"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        holder = await start(time_env.client, task_queue, order(key, 1, "human", 600))
        await eventually(lambda: holder.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiter = await start(time_env.client, task_queue, order(key, 1, "human", 60))
        await eventually(lambda: waiter.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        semaphore = time_env.client.get_workflow_handle(semaphore_of(key))
        await semaphore.cancel()
        assert (await holder.result()).status == "completed"
        assert (await waiter.result()).status == "completed"
        await semaphore_ended(time_env, key)  # idle: it ended by itself


async def test_an_order_that_finds_the_keys_queue_full_asks_again_and_is_called(time_env, task_queue):
    """With one order calling and one waiting, a third finds the queue full (max_waiters 1): it stays
    `queued_for_calling`, says when it asks again (Web UI current details), and is called once there is
    room; never two calls at once."""
    key = f"full-{uuid.uuid4()}"
    settings = settings_for_tests(concurrency_max_waiters=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        calling = await start(time_env.client, task_queue, order(key, 1, "human", 600))
        await eventually(lambda: calling.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiting = await start(time_env.client, task_queue, order(key, 1, "human", 60))
        await eventually(lambda: waiting.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        turned_away = await start(time_env.client, task_queue, order(key, 1, "human", 60))
        details = await eventually(lambda: current_details(turned_away), lambda d: "is full" in d)
        assert details.startswith(f"**queued_for_calling**: attempt 1/3: the queue of key `{key}` is full")
        assert await turned_away.query(CallOrderWorkflow.status) == "queued_for_calling"
        calls = [await handle.result() for handle in (calling, waiting, turned_away)]
        semaphore = time_env.client.get_workflow_handle(semaphore_of(key))
        state = await semaphore.query(ConcurrencySemaphoreWorkflow.state)
        await semaphore_ended(time_env, key)

    assert [call.status for call in calls] == ["completed"] * 3
    attempts = [call.call_attempts[0] for call in calls]
    assert peak_overlap([(a.started_at, a.ended_at) for a in attempts]) == 1
    assert attempts[2].started_at >= attempts[1].ended_at  # served after the one that queued in time
    assert state.stats.deferred >= 1 and state.stats.grants == 3
    history = await turned_away.fetch_history()
    assert any(
        e.workflow_execution_signaled_event_attributes.signal_name == DEFER_SIGNAL for e in history.events
    )
    replayer = Replayer(
        workflows=[CallOrderWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)


async def test_an_order_turned_away_stops_asking_when_its_window_closes(time_env, task_queue):
    """Turned away by a full queue near the end of its calling window, an order asks again after 1, 2,
    4 and 8 minutes, then finds the window closed: it reschedules for the next window instead of asking
    all night, and is called then."""
    key = f"closing-{uuid.uuid4()}"
    now = await time_env.get_current_time()
    if now.hour == 23 and now.minute >= 29:  # a same-day 30-minute window needs room before midnight
        await time_env.sleep(timedelta(hours=1))
        now = await time_env.get_current_time()
    window = (now.strftime("%H:%M"), (now + timedelta(minutes=30)).strftime("%H:%M"))
    settings = settings_for_tests(concurrency_max_waiters=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        calling = await start(time_env.client, task_queue, order(key, 1, "human", 3600, window))
        await eventually(lambda: calling.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiting = await start(time_env.client, task_queue, order(key, 1, "human", 60, window))
        await eventually(lambda: waiting.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        turned_away = await start(time_env.client, task_queue, order(key, 1, "human", 60, window))
        await eventually(lambda: current_details(turned_away), lambda d: "is full" in d)
        calls = [await handle.result() for handle in (calling, waiting, turned_away)]
        await semaphore_ended(time_env, key)

    assert [call.status for call in calls] == ["completed"] * 3
    attempt = calls[2].call_attempts[0]
    assert (
        attempt.started_at - now > timedelta(hours=20) and attempt.started_at.strftime("%H:%M") >= window[0]
    )
    history = await turned_away.fetch_history()
    deferrals = [
        e.event_time.ToDatetime(tzinfo=UTC)
        for e in history.events
        if e.workflow_execution_signaled_event_attributes.signal_name == DEFER_SIGNAL
    ]
    assert len(deferrals) == 5, deferrals  # at 0, 1, 3, 7 and 15 minutes; none after the window closed
    assert all(at - now < timedelta(minutes=30) for at in deferrals)


async def test_a_pause_sent_while_the_number_is_looked_up_after_a_long_wait_is_obeyed(
    time_env, task_queue, monkeypatch
):
    """Granted after a long wait, the permit's order looks its number up again (the database may be
    restarting, for a while): a pause sent meanwhile was ignored and the order dialled."""
    from activities.persistence import DatabaseDoNotContactRegistry

    real_get, down, looked_up = DatabaseDoNotContactRegistry.get, [False], asyncio.Event()
    number = f"+33612{uuid.uuid4().int % 10**6:06d}"

    async def get(self, organization_id, phone_number):  # type: ignore[no-untyped-def]
        if phone_number == number and down[0]:
            looked_up.set()
            raise ConnectionError("database restarting")
        return await real_get(self, organization_id, phone_number)

    monkeypatch.setattr(DatabaseDoNotContactRegistry, "get", get)
    key = f"recheck-{uuid.uuid4()}"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        ahead = await start(time_env.client, task_queue, order(key, 1, "human", 30))
        await eventually(lambda: ahead.query(CallOrderWorkflow.status), lambda s: s == "calling")
        waiting = order(key, 1, "human", 30).model_copy(update={"phone_number": number})
        handle = await start(time_env.client, task_queue, waiting)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "queued_for_calling")
        down[0] = True
        await ahead.result()  # its permit goes to the waiting order, which looks its number up
        await asyncio.wait_for(looked_up.wait(), 30)
        await handle.signal(CallOrderWorkflow.pause)
        down[0] = False
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "paused")
        assert (await handle.query(CallOrderWorkflow.call)).calls_count == 0  # before: it dialled
        await handle.signal(CallOrderWorkflow.cancel)
        await handle.result()
        await semaphore_ended(time_env, key)

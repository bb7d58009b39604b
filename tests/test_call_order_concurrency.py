"""Concurrency keys on real call orders (time-skipping): never more than `max` calls at once, permits
released between retries, given back when the window closed, reclaimed from a terminated order."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle

from models import Call, CallCreateParams
from tests.helpers import eventually, settings_for_tests
from workers import create_worker
from workflows.call_order import DEFAULT_ORGANIZATION, CallOrderWorkflow
from workflows.concurrency import ConcurrencySemaphoreWorkflow, organization_key, semaphore_workflow_id

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

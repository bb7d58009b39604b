"""Faults on the real Temporal dev server with its SQLite file, every process started by the test: a
worker killed with SIGKILL mid-ring and again mid-call, and the server itself killed and restarted
with 100 orders waiting. Every order finishes once; no attempt rings twice; no permit is left held.

Progress is read from the server (describe, history, visibility) and from the simulated trunk's ring
ledger, so the probes work while no worker is alive."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from activities.simulated import SimulatedRingLedger, SimulatedTelephony
from models import Call, CallCreateParams
from models.concurrency import SemaphoreState
from models.workflow_io import DialRequest
from tests.helpers import eventually
from tests.processes import Stack
from tests.test_call_order_concurrency import semaphore_of
from workflows.call_order import CallOrderWorkflow
from workflows.concurrency import STATE_QUERY


def calling_hours_now(max_attempts: int = 3) -> dict[str, object]:
    """A retry config whose window is open now and for hours: a whole-hour zone where it is about noon."""
    offset = 12 - datetime.now(UTC).hour  # -11..12
    zone = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT signs are inverted
    return {
        "timezone": zone,
        "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        "calling_windows": [{"calling_window_start_time": "01:00", "calling_window_end_time": "23:00"}],
        "max_retry_attempts": max_attempts,
    }


def order(
    simulation: str = "human:interested",
    *,
    max_attempts: int = 3,
    ring_seconds: float = 0,
    call_seconds: float = 0,
    key: str | None = None,
    max: int = 1,
    scheduled_at: datetime | None = None,
) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {"prompt": "Offer a demo.", "call_retry_config": calling_hours_now(max_attempts)},
            "metadata": {
                "simulation": simulation,
                "simulation.ring_seconds": str(ring_seconds),
                "simulation.call_seconds": str(call_seconds),
            },
            **({"concurrency": {"key": key, "max": max}} if key else {}),
            **({"scheduled_at": scheduled_at.isoformat()} if scheduled_at else {}),
        }
    )


async def place(client: Client, task_queue: str, orders: list[CallCreateParams]) -> list[WorkflowHandle]:
    return list(
        await asyncio.gather(
            *(
                client.start_workflow(
                    CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
                )
                for params in orders
            )
        )
    )


async def dialing(handle: WorkflowHandle) -> bool:
    """Its dial activity runs on a worker (started, not finished)."""
    description = await handle.describe()
    return any(
        activity.activity_type.name == "dial"
        and activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for activity in description.raw_description.pending_activities
    )


async def in_call(handle: WorkflowHandle) -> bool:
    """The simulated conversation's timer is running (answered, not hung up)."""
    running: set[int] = set()
    async for event in handle.fetch_history_events():
        if event.HasField("timer_started_event_attributes"):
            if "simulated call in progress" in event.user_metadata.summary.data.decode():
                running.add(event.event_id)
        for fired in ("timer_fired_event_attributes", "timer_canceled_event_attributes"):
            if event.HasField(fired):
                running.discard(getattr(event, fired).started_event_id)
    return bool(running)


async def worker_pids(handle: WorkflowHandle) -> set[int]:
    """The processes that completed the order's workflow tasks (identity `<pid>@<host>`)."""
    history = await handle.fetch_history()
    return {
        int(e.workflow_task_completed_event_attributes.identity.split("@")[0])
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    }


async def dial_attempts(handle: WorkflowHandle) -> list[int]:
    """How many times each dial activity ran (its last attempt number)."""
    history = await handle.fetch_history()
    dials = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "dial"
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in dials
    ]


async def results(handles: list[WorkflowHandle], *, timeout: float) -> list[Call]:
    async def all_results() -> list[Call]:
        return [await handle.result() for handle in handles]

    return await asyncio.wait_for(all_results(), timeout)


async def semaphore_state(client: Client, key: str) -> SemaphoreState:
    handle = client.get_workflow_handle(semaphore_of(key))
    return await handle.query(STATE_QUERY, result_type=SemaphoreState)


def assert_rang_once_per_order(ledger: Path, calls: list[Call]) -> None:
    rings = SimulatedRingLedger(ledger).rings()
    assert Counter(ring.attempt_id for ring in rings) == Counter(
        attempt.id for call in calls for attempt in call.call_attempts
    )
    assert sorted(ring.call_id for ring in rings) == sorted(call.id for call in calls)


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path, task_queue=f"faults-{uuid.uuid4().hex[:8]}")
    await stack.start_server()
    try:
        yield stack
    finally:
        await stack.stop()


async def test_worker_killed_mid_ring_and_mid_call_every_order_finishes_once(stack: Stack) -> None:
    client = await stack.client()
    key = f"faults-{uuid.uuid4().hex[:8]}"
    first = await stack.start_worker()
    handles = await place(
        client, stack.task_queue, [order(ring_seconds=2, call_seconds=4, key=key, max=2) for _ in range(3)]
    )
    ledger = SimulatedRingLedger(stack.ring_ledger)

    async def ringing() -> list[WorkflowHandle]:
        rang = {ring.call_id for ring in ledger.rings()}
        return [h for h in handles if h.id.removeprefix("call-") in rang and await dialing(h)]

    mid_ring = (await eventually(ringing, bool))[0]
    stack.kill_worker(first)

    second = await stack.start_worker()

    async def talking() -> list[WorkflowHandle]:
        return [h for h in handles if await in_call(h)]

    mid_call = (await eventually(talking, bool, timeout=40))[0]
    stack.kill_worker(second)

    third = await stack.start_worker()
    calls = await results(handles, timeout=60)

    assert [(c.status, c.calls_count, c.outcome) for c in calls] == [("completed", 1, "interested")] * 3
    assert max(await dial_attempts(mid_ring)) >= 2  # the dial really was interrupted and retried
    assert {second.pid, third.pid} <= await worker_pids(mid_call)  # the call outlived its worker
    assert_rang_once_per_order(stack.ring_ledger, calls)
    state = await semaphore_state(client, key)
    assert state.holders == [] and state.waiters == [] and state.stats.grants == 3


async def test_server_killed_and_restarted_with_100_waiting_orders_loses_none(stack: Stack) -> None:
    """80 orders wait in timers, 20 queue for a key's permits (both held by calls that last until the
    test cancels them); the server is killed with SIGKILL and restarted on the same SQLite file."""
    client = await stack.client()
    key = f"restart-{uuid.uuid4().hex[:8]}"
    worker = await stack.start_worker()
    # Far enough ahead for 100 orders to settle on a loaded 2-core machine before the crash.
    later = datetime.now(UTC) + timedelta(seconds=45)
    # Cheap orders (one unanswered attempt): the point is the waiting, not the call.
    holders = await place(client, stack.task_queue, [order(call_seconds=3600, key=key, max=2)] * 2)
    in_timers = await place(
        client, stack.task_queue, [order("no_answer", max_attempts=1, scheduled_at=later)] * 80
    )

    async def count(query: str) -> int:
        return (await client.count_workflows(f"TaskQueue='{stack.task_queue}' AND {query}")).count

    await eventually(lambda: count("CallStatus='calling'"), lambda n: n == 2, timeout=30)
    queued = await place(client, stack.task_queue, [order("no_answer", max_attempts=1, key=key, max=2)] * 20)
    await eventually(lambda: count("CallStatus='scheduled'"), lambda n: n == 80, timeout=40)
    await eventually(lambda: count("CallStatus='queued_for_calling'"), lambda n: n == 20, timeout=40)
    assert datetime.now(UTC) < later  # every timer is still pending at the crash
    stack.kill_server()
    await stack.start_server()  # the same SQLite file and port; the worker and client reconnect
    for holder in holders:
        await holder.signal(CallOrderWorkflow.cancel)

    calls = await results(in_timers + queued, timeout=90)
    assert worker.poll() is None  # the same worker process carried on
    assert [(c.status, c.calls_count) for c in calls] == [("completed", 1)] * 100
    assert all(c.call_attempts[0].started_at >= later for c in calls[:80])  # type: ignore[operator]
    assert [(await h.result()).status for h in holders] == ["cancelled"] * 2
    assert await count("WorkflowType='CallOrderWorkflow'") == 102  # none lost, none duplicated
    assert_rang_once_per_order(stack.ring_ledger, calls + [await h.result() for h in holders])
    state = await semaphore_state(client, key)
    assert state.holders == [] and state.waiters == [] and state.stats.grants == 22


async def test_simulated_trunks_sharing_a_ledger_ring_each_attempt_once(tmp_path: Path) -> None:
    """Two workers' simulated trunks (a dial retried elsewhere, or twice at once) ring the phone once
    and wait for the same ring's callee."""
    first, second = SimulatedTelephony(tmp_path / "rings.jsonl"), SimulatedTelephony(tmp_path / "rings.jsonl")
    request = DialRequest(
        call_id="c1",
        attempt_id="a1",
        attempt_number=1,
        to_phone_number="+33612345678",
        from_phone_number="+33159000000",
        metadata={"simulation": "busy", "simulation.ring_seconds": "0.2"},
    )
    one, other = await asyncio.gather(first.dial(request), second.dial(request))
    again = await second.dial(request.model_copy(update={"attempt_id": "a2", "attempt_number": 2}))
    assert one == other == again and one.dial_error == "busy" and not one.answered
    rings = SimulatedRingLedger(tmp_path / "rings.jsonl").rings()
    assert [(r.call_id, r.attempt_id) for r in rings] == [("c1", "a1"), ("c1", "a2")]
    assert first.rings["a1"] == second.rings["a1"] == rings[0].rang_at

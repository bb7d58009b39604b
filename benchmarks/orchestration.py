"""Benchmark: orchestration overhead of CallOrderWorkflow against a no-op baseline, in one run.

    python benchmarks/orchestration.py [--orders 200]

N single-attempt orders (simulated callee `human:interested`, zero-length calls, `force_now`) run end to
end on the real dev server (in memory) and one worker built by `create_worker`; then N no-op workflows,
each running the same number of no-op activities one after another as one order ran (counted from an
order's history), on a worker with the same settings. Reported: both throughputs and their ratio
(goal >= 0.5), activities and history events per order.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
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


async def baseline(client: Client, n: int, activities: int) -> float:
    """Throughput of N no-op workflows running `activities` no-op activities each (per second)."""
    queue = f"baseline-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[NoopWorkflow],
        activities=[noop],
        workflow_runner=workflow_runner(),
    ):
        started = time.monotonic()
        await run_all(
            client.start_workflow(NoopWorkflow.run, activities, id=f"{queue}-{i}", task_queue=queue)
            for i in range(n)
        )
        return n / (time.monotonic() - started)


async def main(n: int) -> None:
    from workers import create_worker
    from workflows.call_order import CallOrderWorkflow

    async with dev_server() as client:
        queue = f"orders-{uuid.uuid4().hex[:6]}"
        database = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-bench-')}/outdial.db"
        async with create_worker(client, task_queue=queue, settings=orders.settings(database)):
            warm = await client.execute_workflow(
                CallOrderWorkflow.run, orders.now(), id=f"call-{uuid.uuid4()}", task_queue=queue
            )
            assert warm.status == "completed"
            started = time.monotonic()
            handles = await run_all(
                client.start_workflow(
                    CallOrderWorkflow.run, orders.now(), id=f"call-{uuid.uuid4()}", task_queue=queue
                )
                for _ in range(n)
            )
            rate = n / (time.monotonic() - started)
            stats = await history_stats(handles[0])
        base = await baseline(client, n, stats.activities)
    print(f"orders={n} (single attempt, zero-length calls, simulated provider)")
    print(f"per order: {stats.activities} activities, {stats.events} history events")
    print(f"call orders             {rate:7.1f} /s")
    print(f"baseline (no-op wf, {stats.activities} no-op activities in sequence) {base:7.1f} /s")
    print(f"ratio                   {rate / base:.2f}  (goal >= 0.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    asyncio.run(main(parser.parse_args().orders))

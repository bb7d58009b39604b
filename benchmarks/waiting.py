"""Benchmark: the scale of waiting. N orders scheduled for tomorrow, held by one worker process.

    python benchmarks/waiting.py [--orders 10000] [--cache 100]

The real dev server (in memory) and one `outdial worker` process with a bounded workflow cache
(OUTDIAL_MAX_CACHED_WORKFLOWS). N orders are placed for tomorrow 10:00 Europe/Paris; once every one
is `scheduled` (visibility: CallStatus), the worker's resident memory is read from /proc (now and
its peak), against the same process idle before the first order (the baseline). Also reported: the
history events each waiting order holds, and the time to bring all N to `scheduled`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import dev_server, orders


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def main(n: int, cache: int) -> None:
    from tests.helpers import eventually
    from tests.processes import Stack
    from workflows.call_order import CallOrderWorkflow

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    params = orders.now(
        force_now=False,
        scheduled_at=tomorrow.isoformat(),
        assistant={"prompt": "Offer a demo.", "call_retry_config": {"timezone": "Europe/Paris"}},
    )
    async with dev_server() as client:
        stack = Stack(
            Path(tempfile.mkdtemp(prefix="outdial-bench-")), task_queue=f"wait-{uuid.uuid4().hex[:6]}"
        )
        stack.settings = stack.settings.model_copy(
            update={"temporal_address": client.service_client.config.target_host}
        )
        worker = await stack.start_worker(OUTDIAL_MAX_CACHED_WORKFLOWS=str(cache))
        try:
            idle, _ = memory_mb(worker.pid)
            started = time.monotonic()
            ids, queue = [f"call-{uuid.uuid4()}" for _ in range(n)], stack.task_queue
            for batch in range(0, n, 200):
                await asyncio.gather(
                    *(
                        client.start_workflow(CallOrderWorkflow.run, params, id=id, task_queue=queue)
                        for id in ids[batch : batch + 200]
                    )
                )

            async def scheduled() -> int:
                query = f"TaskQueue='{queue}' AND CallStatus='scheduled'"
                return (await client.count_workflows(query)).count

            await eventually(scheduled, lambda count: count == n, timeout=3600)
            elapsed = time.monotonic() - started
            resident, peak = memory_mb(worker.pid)
            sample = [await client.get_workflow_handle(i).describe() for i in ids[:: max(1, n // 100)]]
            events = [d.history_length for d in sample]
        finally:
            await stack.stop()
    print(f"orders={n} scheduled for {tomorrow:%Y-%m-%d %H:%M} UTC, worker cache {cache} workflows")
    print(f"all scheduled after     {elapsed:.0f} s ({n / elapsed:.0f} orders/s)")
    print(f"worker RSS idle         {idle:6.0f} MB (baseline)")
    print(f"worker RSS now / peak   {resident:6.0f} MB / {peak:.0f} MB  (goal <= 300 MB)")
    print(f"ratio to idle           {resident / idle:.2f} now, {peak / idle:.2f} peak")
    median = statistics.median(events)
    print(f"history events / order  {median:.0f} (median of {len(events)} sampled, max {max(events)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--cache", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.cache))

"""Benchmark: window precision in time-skipping mode. Do first attempts start when windows open?

    python benchmarks/windows.py [--orders 48]

Orders across timezones (DST and half-hour zones included) and window start times, every pair of them,
are each scheduled two days ahead as its window closes; each one's next window opening is computed
here independently with `zoneinfo`. In the
time-skipping test server a worker built by `create_worker` runs them; reported is how late each first
attempt started after its window opened (goal: within 1 s), against a baseline workflow that only
sleeps until the same instants (the server's own timer precision), measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio import workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with workflow.unsafe.imports_passed_through():
    from benchmarks.common import orders, percentile
    from models.common import WEEKDAYS
    from workflows import workflow_runner

ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Los_Angeles",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
]
STARTS = ["08:00", "09:30", "10:00", "12:15", "14:00", "17:45"]
END = "20:00"


@workflow.defn
class SleepUntilWorkflow:
    """The baseline: one durable timer to an instant, then report when it woke."""

    @workflow.run
    async def run(self, until: datetime) -> datetime:
        await workflow.sleep(until - workflow.now())
        return workflow.now()


def window_opens(zone: str, start: str, end: str, after: datetime) -> datetime:
    """When the daily window [start, end) in `zone` is first open at or after `after`."""
    local = after.astimezone(ZoneInfo(zone))
    if start <= f"{local:%H:%M}" < end:
        return after
    hour, minute = map(int, start.split(":"))
    for days in range(3):
        day = local.date() + timedelta(days=days)
        opening = datetime.combine(day, time(hour, minute), ZoneInfo(zone))
        if opening >= after:
            return opening.astimezone(UTC)
    raise AssertionError("no opening within three days")


def closing(zone: str, start: str, day: date) -> datetime:
    """When the window [start, END) in `zone` closes on `day`: the order waits for the next opening."""
    hour, minute = map(int, END.split(":"))
    return datetime.combine(day, time(hour, minute), ZoneInfo(zone)).astimezone(UTC)


async def main(n: int) -> None:
    from models import Call
    from workers import create_worker, register_search_attributes
    from workers.devserver import installed
    from workflows.call_order import CallOrderWorkflow

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed("temporal-test-server"), data_converter=pydantic_data_converter
    )
    async with env:
        await register_search_attributes(env.client)
        now = await env.get_current_time()
        day = (now + timedelta(days=2)).date()
        # Every (zone, start) pair in turn, each order scheduled as its window closes: what it waits for
        # is the next opening (scheduled midnight UTC, 14 of the 48 found their window open already, and
        # the pairs repeated: 24 of them, each zone with 3 of the starts).
        pairs = [(zone, start) for start in STARTS for zone in ZONES]
        cases = [(*pairs[i % len(pairs)], closing(*pairs[i % len(pairs)], day)) for i in range(n)]
        queue = f"windows-{uuid.uuid4().hex[:6]}"
        database = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-bench-')}/outdial.db"
        late: list[float] = []
        baseline: list[float] = []
        async with (
            create_worker(env.client, task_queue=queue, settings=orders.settings(database)),
            Worker(
                env.client,
                task_queue=f"{queue}-baseline",
                workflows=[SleepUntilWorkflow],
                workflow_runner=workflow_runner(),
            ),
        ):
            handles = []
            for zone, start, scheduled in cases:
                params = orders.now(
                    force_now=False,
                    scheduled_at=scheduled.isoformat(),
                    assistant={
                        "prompt": "Offer a demo.",
                        "call_retry_config": {
                            "timezone": zone,
                            "allowed_days": list(WEEKDAYS),
                            "calling_windows": [
                                {"calling_window_start_time": start, "calling_window_end_time": END}
                            ],
                        },
                    },
                )
                opens = window_opens(zone, start, END, scheduled)
                assert opens > scheduled, (zone, start)  # a window opening, not the order's own time
                order = await env.client.start_workflow(
                    CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=queue
                )
                sleeper = await env.client.start_workflow(
                    SleepUntilWorkflow.run, opens, id=f"sleep-{uuid.uuid4()}", task_queue=f"{queue}-baseline"
                )
                handles.append((opens, order, sleeper))
            for opens, order, sleeper in handles:  # one result at a time (the test server's lock)
                call: Call = await order.result()
                started = call.call_attempts[-1].started_at
                assert isinstance(started, datetime), call
                late.append((started - opens).total_seconds())
                baseline.append((await sleeper.result() - opens).total_seconds())
    print(
        f"orders={n} over {len({c[:2] for c in cases})} of the {len(ZONES)} zones x {len(STARTS)} window "
        f"starts, each scheduled as its window closed on {day}"
    )
    print(
        f"first attempt after window opened  p50 {statistics.median(late):.3f} s  max {max(late):.3f} s"
        f"  min {min(late):.3f} s  (goal: 0 <= late <= 1 s)"
    )
    print(
        f"baseline timer to the same instant p50 {statistics.median(baseline):.3f} s  "
        f"max {max(baseline):.3f} s  p99 {percentile(baseline, 99):.3f} s"
    )
    print(
        f"within 1 s: {sum(0 <= x <= 1 for x in late)}/{n}; max lateness over baseline max: "
        f"{max(late) - max(baseline):+.3f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=48)
    asyncio.run(main(parser.parse_args().orders))

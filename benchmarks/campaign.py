"""Benchmark: launching a 10,000-row campaign on the real Temporal dev server (in memory).

    python benchmarks/campaign.py [--rows 10000] [--rows-per-second 1000] [--burst 500] [--batch 200]

Every order is scheduled for 2099 (so it runs its start-up: do-not-contact check, prepare, persist,
then sleeps on a timer); what is measured is getting them all started and settled:

- baseline: the same N CallOrderWorkflows started straight from a client (50 starts in flight), the
  way `POST /call` starts one: time until all are started, and until all are `scheduled` in the DB;
- campaign: `outdial campaign create` of N rows (database time), then the launch through
  CampaignWorkflow (paced batches, one activity per batch): time until its `progress` says all started,
  and until all are `scheduled` in the DB; its history length and continue-as-new count;
- resident memory (peak, sampled every 0.5 s) of the dev server process and of this process (the
  worker, the benchmark client and the database writes all run here).
The pacing is set high here on purpose (it is the campaign's own limiter: at the default 20 rows/s
10,000 rows take 500 s by design); the ratio shows the machinery's cost over bare starts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api import campaign_store  # noqa: E402
from api.store import save_assistant  # noqa: E402
from models import CallCreateParams  # noqa: E402
from models.campaign import CampaignCreateParams, CampaignInput, CampaignLaunchParams, CampaignPace  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.tables import AssistantRecord, CallOrderRecord, Database  # noqa: E402
from workers import create_worker, register_search_attributes  # noqa: E402
from workers.devserver import installed
from workflows.campaign import CampaignWorkflow  # noqa: E402

ORG = "org_bench"
LATER = "2099-01-05T09:00:00Z"


class Peaks:
    """Peak resident memory of the dev server and of this process, sampled in the background."""

    def __init__(self) -> None:
        me = psutil.Process()
        self.me = me
        self.server = next(p for p in me.children(recursive=True) if "temporal" in p.name())
        self.peak_server = self.peak_me = 0
        self._task: asyncio.Task | None = None

    def reset(self) -> None:
        self.peak_server = self.server.memory_info().rss
        self.peak_me = self.me.memory_info().rss

    async def _sample(self) -> None:
        while True:
            self.peak_server = max(self.peak_server, self.server.memory_info().rss)
            self.peak_me = max(self.peak_me, self.me.memory_info().rss)
            await asyncio.sleep(0.5)

    def __enter__(self) -> Peaks:
        self.reset()
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task
        self._task.cancel()

    def line(self) -> str:
        mib = 2**20
        return (
            f"server RSS peak {self.peak_server / mib:.0f} MiB, worker RSS peak {self.peak_me / mib:.0f} MiB"
        )


def scheduled_count(database: Database, campaign_id: str | None = None) -> int:
    with database.session() as session:
        query = select(func.count()).select_from(CallOrderRecord).where(CallOrderRecord.status == "scheduled")
        if campaign_id:
            query = query.where(CallOrderRecord.campaign_id == campaign_id)
        else:
            query = query.where(CallOrderRecord.campaign_id.is_(None))  # type: ignore[union-attr]
        return session.scalar(query) or 0


async def until(probe, done, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not done(await probe()):
        if time.monotonic() - start > timeout:
            raise TimeoutError("benchmark phase did not finish in time")
        await asyncio.sleep(0.25)
    return time.monotonic() - start


async def baseline(client: Client, database: Database, settings: Settings, rows: int) -> tuple[float, float]:
    params = CallCreateParams.model_validate({"phone_number": "+33612345678", "scheduled_at": LATER})
    limit = asyncio.Semaphore(50)

    async def start(i: int) -> None:
        async with limit:
            await client.start_workflow(
                "CallOrderWorkflow",
                params,
                id=f"call-{uuid.uuid4()}",
                task_queue=settings.task_queue,
                memo={"organization_id": ORG},
            )

    t0 = time.monotonic()
    await asyncio.gather(*(start(i) for i in range(rows)))
    started = time.monotonic() - t0
    await until(lambda: asyncio.to_thread(scheduled_count, database), lambda n: n >= rows, 3600)
    return started, time.monotonic() - t0


async def campaign(client: Client, database: Database, settings: Settings, args: argparse.Namespace) -> dict:
    assistant = save_assistant(
        database,
        AssistantRecord(id=str(uuid.uuid4()), organization_id=ORG, name="Bench", config={"prompt": "Hi"}),
    )
    contacts = [
        {"to_phone_number": f"+336{10000000 + i:08d}", "prompt_variables": {"name": f"Contact {i}"}}
        for i in range(args.rows)
    ]
    t0 = time.monotonic()
    params = CampaignCreateParams(
        name="Bench", assistant_id=assistant.id, contacts=contacts, max_concurrent_calls=5
    )
    record, skipped = await asyncio.to_thread(campaign_store.create_campaign, database, settings, ORG, params)
    created = time.monotonic() - t0
    assert not skipped
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at=LATER)
    await asyncio.to_thread(campaign_store.select_for_launch, database, ORG, record.id, launch)
    t1 = time.monotonic()
    handle = await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(
            campaign_id=record.id,
            organization_id=ORG,
            pace=CampaignPace(rows_per_second=args.rows_per_second, burst=args.burst),
            batch_size=args.batch,
        ),
        id=f"campaign-{record.id}",
        task_queue=settings.task_queue,
        start_signal="launch",
    )
    progress = await handle.result()
    started = time.monotonic() - t1
    await until(
        lambda: asyncio.to_thread(scheduled_count, database, campaign_id=record.id),
        lambda n: n >= args.rows,
        3600,
    )
    settled = time.monotonic() - t1
    history = await handle.fetch_history()
    return {
        "created": created,
        "started": started,
        "settled": settled,
        "progress": progress,
        "events_last_run": len(history.events),
    }


async def main(args: argparse.Namespace) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed("temporal"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    database_url = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-bench-')}/outdial.db"
    settings = Settings.load(config_file="/nonexistent", env={}).model_copy(
        update={"database_url": database_url, "task_queue": "campaign-bench"}
    )
    database = Database.for_url(database_url)
    try:
        async with create_worker(env.client, task_queue=settings.task_queue, settings=settings):
            with Peaks() as peaks:
                started, settled = await baseline(env.client, database, settings, args.rows)
                print(f"baseline: {args.rows} bare start_workflow of CallOrderWorkflow (50 in flight)")
                print(
                    f"  all started {started:.1f} s ({args.rows / started:.0f}/s), "
                    f"all scheduled {settled:.1f} s"
                )
                print(f"  {peaks.line()}")
                base_started, base_settled = started, settled
                peaks.reset()
                result = await campaign(env.client, database, settings, args)
                print(
                    f"campaign: {args.rows} rows (pace {args.rows_per_second}/s, burst {args.burst}, "
                    f"batch {args.batch}); created in the database in {result['created']:.1f} s"
                )
                print(
                    f"  all started {result['started']:.1f} s ({args.rows / result['started']:.0f}/s), "
                    f"all scheduled {result['settled']:.1f} s"
                )
                print(
                    f"  runs (continue-as-new) {result['progress'].runs}, events in the last run "
                    f"{result['events_last_run']}, started {result['progress'].started}, "
                    f"already started {result['progress'].already_started}"
                )
                print(f"  {peaks.line()}")
                print(
                    f"ratio campaign / baseline: started {result['started'] / base_started:.2f}x, "
                    f"scheduled {result['settled'] / base_settled:.2f}x"
                )
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rows-per-second", type=float, default=1000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--batch", type=int, default=200)
    asyncio.run(main(parser.parse_args()))

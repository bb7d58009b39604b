"""Record workflow histories for the replay test: `python -m tests.record_histories [campaign]`.

Run it when the workflow changes shape on purpose, and commit the new files next to the old ones:
the old ones must keep replaying (or be retired with a versioning decision), which is the point.
Workflow ids are fixed (`call-<file stem>`): the replay must see the id the history was made with.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models import CallCreateParams
from models.tables import Database
from tests.helpers import eventually, settings_for_tests
from workers import create_worker, register_search_attributes
from workflows.call_order import CallOrderWorkflow

HISTORIES = Path(__file__).parent / "histories"
OPEN = {
    "timezone": "Europe/Paris",
    "calling_windows": [{"calling_window_start_time": "10:00", "calling_window_end_time": "18:00"}],
}


def scenario(simulation: str, **extra: object) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": "Offer {{name}} a demo.",
                "call_retry_config": OPEN,
                "structured_output_config": [{"name": "name", "type": "string", "required": True}],
            },
            "prompt_variables": {"name": "Claire"},
            "metadata": {"simulation": simulation, "simulation.call_seconds": "30"},
            **extra,
        }
    )


async def record_campaign(env: WorkflowEnvironment) -> None:
    """A 6-row campaign launched two rows at a time, paused, resumed, then cancelled mid-launch."""
    from api import campaign_store
    from models.campaign import CampaignInput, CampaignLaunchParams, CampaignPace
    from tests.test_campaign import ORG, create
    from workflows.campaign import CampaignWorkflow

    settings = settings_for_tests(task_queue="record")
    database = Database.for_url(settings.database_url)
    rows = [
        {"to_phone_number": f"+3361234560{i}", "prompt_variables": {"name": f"Contact {i}"}} for i in range(6)
    ]
    campaign, _ = create(database, settings, rows)
    launch = CampaignLaunchParams(mode="ai_first", scheduled_at="2099-01-05T09:00:00Z")
    campaign_store.select_for_launch(database, ORG, campaign.id, launch)
    async with create_worker(env.client, task_queue="record", settings=settings):
        handle = await env.client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(
                campaign_id=campaign.id,
                organization_id=ORG,
                pace=CampaignPace(rows_per_second=0.01, burst=2),
                batch_size=2,
            ),
            id="call-campaign_launch_pause_resume_cancel",
            task_queue="record",
            start_signal="launch",
        )
        progress = lambda: handle.query(CampaignWorkflow.get_progress)  # noqa: E731
        await eventually(progress, lambda p: p.started == 2)
        await handle.signal(CampaignWorkflow.pause)
        await eventually(progress, lambda p: p.orders_paused is True)
        await handle.signal(CampaignWorkflow.resume)
        await eventually(progress, lambda p: p.orders_paused is False)
        await handle.signal(CampaignWorkflow.cancel)
        await handle.result()
        history = await handle.fetch_history()
        (HISTORIES / "campaign_launch_pause_resume_cancel.json").write_text(history.to_json())


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=shutil.which("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    if sys.argv[1:] == ["campaign"]:
        await record_campaign(env)
        await env.shutdown()
        return
    orders = {
        "voicemail_then_human": scenario("voicemail,human:interested"),
        "no_answer_exhausted": scenario("no_answer"),
        "with_concurrency_key": scenario("busy,human:completed", concurrency={"key": "replay", "max": 2}),
        "cancelled_while_waiting": scenario("human", scheduled_at="2099-01-05T09:00:00Z"),
    }
    async with create_worker(env.client, task_queue="record", settings=settings_for_tests()):
        for name, params in orders.items():
            handle = await env.client.start_workflow(
                CallOrderWorkflow.run, params, id=f"call-call_order_{name}", task_queue="record"
            )
            if name == "cancelled_while_waiting":
                await eventually(
                    lambda h=handle: h.query(CallOrderWorkflow.status), lambda s: s == "scheduled"
                )
                await handle.signal(CallOrderWorkflow.cancel)
            await handle.result()
            history = await handle.fetch_history()
            (HISTORIES / f"call_order_{name}.json").write_text(history.to_json())
        await env.sleep(timedelta(minutes=6))  # let the semaphore end while the worker runs
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())

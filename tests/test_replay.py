"""Every recorded history replays with today's code, so a change that breaks determinism fails CI."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows import workflow_runner
from workflows.call_order import CallOrderWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.concurrency import ConcurrencySemaphoreWorkflow
from workflows.notify import CallNotificationsWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    assert len(HISTORIES) >= 4
    replayer = Replayer(
        workflows=[
            CallOrderWorkflow,
            ConcurrencySemaphoreWorkflow,
            CallNotificationsWorkflow,
            CampaignWorkflow,
        ],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    recorded = path.read_text()  # noqa: ASYNC240 - a small local file
    history = WorkflowHistory.from_json(f"call-{path.stem}", recorded)  # the id it was recorded with
    await replayer.replay_workflow(history)  # raises on nondeterminism

"""Every recorded history replays with today's code, so a change that breaks determinism fails CI.

Histories live in tests/histories/, one run per file named `<workflow id>.json` (see
tests/record_histories.py), or after its scenario when its start event holds its id (a recording from the
dev server); every workflow type the worker registers must have at least one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import WORKFLOWS
from workflows import workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def started(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"])


def workflow_type(path: Path) -> str:
    return str(started(path)["workflowType"]["name"])


def recorded_workflow_id(path: Path) -> str:
    """The id the run had: its start event says it (the dev server records it), else the file's name
    (the time-skipping server does not; `-continued`: a later run of the same workflow)."""
    return str(started(path).get("workflowId") or path.stem.removesuffix("-continued"))


def test_every_workflow_type_has_a_recorded_history() -> None:
    registered = {getattr(cls, "__temporal_workflow_definition").name for cls in WORKFLOWS}
    assert registered <= {workflow_type(path) for path in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    recorded = path.read_text()  # noqa: ASYNC240 - a small local file
    workflow_id = recorded_workflow_id(path)
    await replayer.replay_workflow(
        WorkflowHistory.from_json(workflow_id, recorded)
    )  # raises on nondeterminism

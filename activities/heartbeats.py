"""A long activity's heartbeats: the progress a retry reads, repeated while the work waits.

Temporal keeps only the latest heartbeat's details, and a retry reads them (`heartbeat_details`). So a
keep-alive heartbeat must repeat the progress the work reported, never replace it with none: an empty
one erased the dial's `dialing`, and a retry after a lost answer rang the phone again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")

# The details `report_progress` last heartbeated, for `heartbeating` to repeat (a list it shares with the
# task of the work it waits on: a context variable set in that task would not reach the waiting one).
_progress: ContextVar[list[object] | None] = ContextVar("outdial_heartbeat_progress", default=None)


def report_progress(*details: object) -> None:
    """Heartbeat `details`, what a retry of this activity reads (a no-op outside an activity)."""
    kept = _progress.get()
    if kept is not None:
        kept[:] = details
    with contextlib.suppress(RuntimeError):
        activity.heartbeat(*details)


async def heartbeating(work: Awaitable[T]) -> T:
    """Await `work`, heartbeating meanwhile when the activity has a heartbeat timeout: a worker that
    dies mid-ring is then noticed within that timeout (not the whole start-to-close), and a cancelled
    order's dial is cancelled: the activity ends once the dial has (the phone hung up), so the order
    gives its permit back only then. Each heartbeat repeats the progress `work` last reported."""
    info = activity.info() if activity.in_activity() else None
    timeout = info.heartbeat_timeout if info else None
    kept: list[object] = list(info.heartbeat_details) if info else []  # a retry's: what the try before said
    token = _progress.set(kept)
    try:
        task = asyncio.ensure_future(work)  # its task's context holds `kept`
    finally:
        _progress.reset(token)
    try:
        while timeout:
            done, _ = await asyncio.wait({task}, timeout=timeout.total_seconds() / 3)
            if done:
                break
            activity.heartbeat(*kept)
        return await task
    finally:
        task.cancel()
        await asyncio.wait({task})

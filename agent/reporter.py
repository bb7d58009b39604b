"""The agent's side of the `converse` activity: find it, keep it alive, complete it.

The worker's `converse` activity heartbeats its attempt id and returns "complete async"
(activities/livekit.py). This process, which holds the call, finds that pending activity through
DescribeWorkflowExecution of `call-<call id>`, heartbeats it by id while the call lasts (a dead agent
stops heartbeating, and Temporal notices within the heartbeat timeout), and completes it by id with the
ConverseResult. No task token travels anywhere: completion by id needs only this process's Temporal
client. A heartbeat answered "cancel requested" (or an order that is gone) means the order was cancelled:
`on_cancel` runs once, so the agent says its end-of-call sentence and hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

from temporalio.client import (
    AsyncActivityCancelledError,
    AsyncActivityHandle,
    Client,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from agent.config import CallSpec
from models import Call
from models.workflow_io import ConverseResult

log = logging.getLogger(__name__)

CONVERSE_ACTIVITY = "converse"


class ConverseLink:
    """One attempt's link to its converse activity."""

    def __init__(
        self,
        client: Client,
        call_id: str,
        attempt_id: str,
        *,
        poll_interval: float = 0.5,
        heartbeat_interval: float = 5.0,
        find_timeout: float = 120.0,
    ) -> None:
        self.client = client
        self.call_id = call_id
        self.attempt_id = attempt_id
        self.workflow_id = f"call-{call_id}"
        self._poll = poll_interval
        self._every = heartbeat_interval
        self._find_timeout = find_timeout
        self._handle: AsyncActivityHandle | None = None
        self._found = asyncio.Event()
        self._cancelled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_cancel: Callable[[], object] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def call(self) -> CallSpec:
        """The order as its workflow sees it (the `call` query): assistant, variables, numbers."""
        call = await self.client.get_workflow_handle(self.workflow_id).query("call", result_type=Call)
        return CallSpec.from_call(call, self.attempt_id)

    def start(self, on_cancel: Callable[[], object]) -> None:
        """Find the converse activity and heartbeat it in the background until `finish`."""
        self._on_cancel = on_cancel
        self._task = asyncio.create_task(self._run(), name=f"converse-link-{self.attempt_id}")

    async def found(self) -> None:
        await self._found.wait()

    async def finish(self, result: ConverseResult) -> None:
        """Complete the converse activity with the call's result (or acknowledge its cancellation with
        it)."""
        try:
            if not self._cancelled.is_set():
                async with asyncio.timeout(self._find_timeout):
                    await _first(self._found.wait(), self._cancelled.wait())
        except TimeoutError:
            log.error("attempt %s: no converse activity to report to", self.attempt_id)
        await self._stop()  # no heartbeat may race the completion (it would see the activity gone)
        if self._handle is None:
            return
        with contextlib.suppress(RPCError):  # an order that moved on no longer waits for us
            if self._cancelled.is_set():  # with what was said until then, for the order to keep
                await self._handle.report_cancellation(result)
            else:
                await self._handle.complete(result)

    async def _stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            activity_id = await self._discover()
            if activity_id is None:
                await self._cancel()
                return
            self._handle = self.client.get_async_activity_handle(
                workflow_id=self.workflow_id, run_id=None, activity_id=activity_id
            )
            self._found.set()
            while True:
                try:
                    await self._handle.heartbeat(self.attempt_id)
                except AsyncActivityCancelledError:
                    await self._cancel()
                    return
                except RPCError as err:
                    if err.status != RPCStatusCode.NOT_FOUND:
                        log.warning("attempt %s: heartbeat failed: %s", self.attempt_id, err)
                    elif await self._discover(once=True) != activity_id:
                        await self._cancel()  # the order closed or moved on
                        return
                await asyncio.sleep(self._every)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("attempt %s: converse link failed", self.attempt_id)

    async def _discover(self, *, once: bool = False) -> str | None:
        """The activity id of this attempt's pending converse; None when the order is over."""
        handle = self.client.get_workflow_handle(self.workflow_id)
        while True:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return None
            for pending in description.raw_description.pending_activities:
                if pending.activity_type.name != CONVERSE_ACTIVITY:
                    continue
                details = pending.heartbeat_details.payloads
                decoded = await self.client.data_converter.decode(details) if details else []
                if decoded and decoded[0] == self.attempt_id:
                    return pending.activity_id
            if once:
                return None
            await asyncio.sleep(self._poll)

    async def _cancel(self) -> None:
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        if self._on_cancel:
            outcome = self._on_cancel()
            if inspect.isawaitable(outcome):
                await outcome


async def _first(*awaitables: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]  # type: ignore[arg-type]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()

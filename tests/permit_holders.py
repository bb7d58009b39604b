"""Test holders for the semaphore tests: they stand in for CallOrderWorkflow, request a permit per
attempt, record [granted_at, released_at] in workflow time, "call" with a durable timer, and release.

Not a test module on purpose: the sandbox re-imports a workflow's module for every run, and pytest
rewrites the asserts of a test module on every import (tens of ms each, seconds on a starved machine,
times hundreds of runs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from models.concurrency import PermitDeferral, PermitGrant, PermitHolderState
    from workflows.concurrency import DEFER_SIGNAL, GRANT_SIGNAL, PermitHolder


class HolderInput(BaseModel):
    key: str
    max: int | None  # None: the key's current limit (as `concurrency: {key}` without max)
    calls_minutes: list[float]  # one call per attempt; an attempt is a new ticket
    gap_minutes: float = 10  # "retry delay" between attempts (permit released meanwhile)
    duplicate_requests: bool = False
    # Hand the first grant back and queue again with the same ticket (the calling window closed).
    give_back_first_grant: bool = False


class HolderRecord(BaseModel):
    ticket: str
    granted_at: datetime
    released_at: datetime
    grant: PermitGrant


class HolderResult(BaseModel):
    records: list[HolderRecord]
    grants_received: list[PermitGrant]
    deferrals_received: list[PermitDeferral] = []


@workflow.defn
class PermitTestHolderWorkflow:
    @workflow.init
    def __init__(self, input: HolderInput) -> None:
        self._permits = PermitHolder(input.key, input.max, workflow.info().workflow_id)
        self._grants: list[PermitGrant] = []
        self._deferrals: list[PermitDeferral] = []

    @workflow.signal(name=GRANT_SIGNAL)
    def concurrency_granted(self, grant: PermitGrant) -> None:
        self._grants.append(grant)
        self._permits.on_grant(grant)

    @workflow.signal(name=DEFER_SIGNAL)
    def concurrency_deferred(self, deferral: PermitDeferral) -> None:
        self._deferrals.append(deferral)
        self._permits.on_deferral(deferral)

    @workflow.query
    def held(self) -> list[str]:
        return self._permits.held_tickets

    @workflow.query
    def deferrals(self) -> list[PermitDeferral]:
        return self._deferrals

    async def _granted(self, ticket: str) -> None:
        """Wait for the permit; when the queue was full, ask again after the holder's backoff."""
        while True:
            await workflow.wait_condition(
                lambda: self._permits.granted(ticket) or self._permits.deferred(ticket)
            )
            if self._permits.granted(ticket):
                return
            await workflow.sleep(self._permits.retry_after(ticket), summary="queue full: ask again")
            await self._permits.request(ticket)

    @workflow.run
    async def run(self, input: HolderInput) -> HolderResult:
        records = []
        for i, minutes in enumerate(input.calls_minutes):
            ticket = f"attempt-{i + 1}"
            try:
                await self._permits.request(ticket)
                if input.duplicate_requests:
                    await self._permits.request(ticket)
                await self._granted(ticket)
                if i == 0 and input.give_back_first_grant:
                    await self._permits.release(ticket)
                    await self._permits.request(ticket)
                    await workflow.wait_condition(lambda t=ticket: self._permits.granted(t))
                grant = self._permits.snapshot().held[ticket]
                granted_at = workflow.now()
                await workflow.sleep(timedelta(minutes=minutes), summary="call")
                released_at = workflow.now()
            finally:
                await self._permits.release(ticket)
                if input.duplicate_requests:
                    await self._permits.release(ticket)
            records.append(
                HolderRecord(ticket=ticket, granted_at=granted_at, released_at=released_at, grant=grant)
            )
            if i + 1 < len(input.calls_minutes):
                await workflow.sleep(timedelta(minutes=input.gap_minutes), summary="retry delay")
        await self._permits.settle()
        return HolderResult(records=records, grants_received=self._grants, deferrals_received=self._deferrals)


@workflow.defn
class PassiveHolderWorkflow:
    """A running workflow that only records grants; the test drives the semaphore's signals itself."""

    def __init__(self) -> None:
        self._grants: list[PermitGrant] = []
        self._done = False

    @workflow.signal(name=GRANT_SIGNAL)
    def concurrency_granted(self, grant: PermitGrant) -> None:
        self._grants.append(grant)

    @workflow.signal
    def finish(self) -> None:
        self._done = True

    @workflow.query
    def grants(self) -> list[PermitGrant]:
        return self._grants

    @workflow.run
    async def run(self) -> list[PermitGrant]:
        await workflow.wait_condition(lambda: self._done)
        return self._grants


class CanHolderInput(BaseModel):
    key: str
    max: int | None  # None: the key's current limit (as `concurrency: {key}` without max)
    call_minutes: float
    continue_as_new_when: str  # "waiting" (queued, not granted yet) or "holding"
    permits: PermitHolderState | None = None
    runs: int = 1


class CanHolderResult(BaseModel):
    runs: int
    granted_at: datetime
    released_at: datetime


@workflow.defn
class ContinuingHolderWorkflow:
    """A holder that continues-as-new once, carrying its PermitHolder across (as an order would)."""

    @workflow.init
    def __init__(self, input: CanHolderInput) -> None:
        if input.permits:
            self._permits = PermitHolder.restore(input.permits)
        else:
            self._permits = PermitHolder(input.key, input.max, workflow.info().workflow_id)

    @workflow.signal(name=GRANT_SIGNAL)
    def concurrency_granted(self, grant: PermitGrant) -> None:
        self._permits.on_grant(grant)

    @workflow.run
    async def run(self, input: CanHolderInput) -> CanHolderResult:
        async def carry_over() -> None:
            await self._permits.settle()
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(
                input.model_copy(update={"permits": self._permits.snapshot(), "runs": 2})
            )

        await self._permits.request("attempt-1")  # a no-op in the second run: already waiting or held
        if input.runs == 1 and input.continue_as_new_when == "waiting":
            await carry_over()
        await workflow.wait_condition(lambda: self._permits.granted("attempt-1"))
        granted_at = self._permits.snapshot().held["attempt-1"].granted_at
        if input.runs == 1 and input.continue_as_new_when == "holding":
            await carry_over()
        await workflow.sleep(timedelta(minutes=input.call_minutes))
        released_at = workflow.now()
        await self._permits.release("attempt-1")
        return CanHolderResult(runs=input.runs, granted_at=granted_at, released_at=released_at)


# A coroutine a worker let go of, shared by the two workflows below: they run unsandboxed, in one
# worker, as the garbage collector sees every workflow of its process.
LEFT_BEHIND: list[Coroutine[Any, Any, None]] = []


async def _attempt_holding(permits: PermitHolder, ticket: str) -> None:
    """An order's attempt, reduced to its shape: a permit held while it calls, released in `finally`."""
    try:
        await asyncio.sleep(0)  # the call; the coroutine is left suspended here
    finally:
        await permits.release(ticket)


@workflow.defn(sandboxed=False)
class LeftBehindHolderWorkflow:
    """Holds a permit in an attempt it leaves suspended, as in an order the worker discarded."""

    @workflow.run
    async def run(self, key: str) -> None:
        holder_id = workflow.info().workflow_id
        grant = PermitGrant(
            key=key,
            ticket="attempt-1#1",
            holder_workflow_id=holder_id,
            granted_at=workflow.now(),
            request_seq=1,
            grant_seq=1,
        )
        state = PermitHolderState(key=key, holder_workflow_id=holder_id, seq=1, held={"attempt-1": grant})
        attempt = _attempt_holding(PermitHolder.restore(state), "attempt-1")
        attempt.send(None)  # into its `try`, driven by hand so no task of this workflow owns it
        LEFT_BEHIND.append(attempt)


@workflow.defn(sandboxed=False)
class BystanderWorkflow:
    """Another workflow, running while the garbage collector closes the left-behind attempt."""

    @workflow.run
    async def run(self) -> None:
        attempt = LEFT_BEHIND.pop()
        # What the collector does; it reports a coroutine that awaits while closing, and goes on.
        with contextlib.suppress(RuntimeError):
            attempt.close()

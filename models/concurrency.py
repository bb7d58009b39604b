"""Payloads of the concurrency semaphore (`workflows.concurrency`), exchanged as pydantic models.

A permit is identified by its *ticket ref*: the holder workflow's id plus a ticket (the call attempt's
id). Every signal the semaphore receives and every grant it sends names one, so acquire and release are
idempotent per (order, attempt).
"""

from __future__ import annotations

import zlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class PermitRequest(BaseModel):
    """`acquire` signal: `holder_workflow_id` wants a permit for `ticket` (one call attempt)."""

    key: str = Field(min_length=1)
    ticket: str = Field(min_length=1)
    holder_workflow_id: str = Field(min_length=1)
    # The max this order was placed with; the most recent *new* request's max is the one that applies.
    # None: the key's current limit (a semaphore that is not running starts with the default).
    max: int | None = Field(default=None, ge=1)
    # When the holder asked (holder's workflow time); informational, shown in queries.
    requested_at: datetime | None = None
    # Task queue to start the semaphore on, if it is not running yet (default: the activity's own).
    semaphore_task_queue: str | None = None
    # The holder's run id when it asked. A repeat of a finished (holder, ticket) from the same run is a
    # late duplicate and is ignored; from another run (the holder was reset, or its id reused) it is a
    # new request.
    holder_run_id: str | None = None


class PermitRelease(BaseModel):
    """`release` signal: give back the permit held for (holder, ticket), or withdraw the request."""

    ticket: str = Field(min_length=1)
    holder_workflow_id: str = Field(min_length=1)
    reason: str = "released"
    holder_run_id: str | None = None


class PermitGrant(BaseModel):
    """What the semaphore signals (`concurrency_granted`) to a holder when its turn comes."""

    key: str
    ticket: str
    holder_workflow_id: str
    granted_at: datetime
    # Position of the request in arrival order and of the grant in grant order; both are counted
    # across the semaphore's continue-as-new, so they are unique per semaphore lifetime.
    request_seq: int
    grant_seq: int


class PermitDeferral(BaseModel):
    """What the semaphore signals (`concurrency_deferred`) to a holder whose request found the queue
    full (`SemaphoreInput.max_waiters`): nothing was queued; the holder asks again later."""

    key: str
    ticket: str
    holder_workflow_id: str
    waiting: int  # the queue's length when the request came


class HolderInfo(BaseModel):
    """One holder or waiter, as the `holders` / `waiters` queries show it."""

    holder_workflow_id: str
    ticket: str
    max: int
    holder_run_id: str | None = None
    request_seq: int
    queued_at: datetime
    requested_at: datetime | None = None
    granted_at: datetime | None = None
    grant_seq: int | None = None
    # True once the grant signal reached the holder workflow (False while it is in flight).
    delivered: bool = False


class TicketRef(BaseModel):
    holder_workflow_id: str
    ticket: str
    # The run that requested it (or released it, if the release came first).
    run_id: str | None = None


class SemaphoreStats(BaseModel):
    requests: int = 0
    duplicate_requests: int = 0
    grants: int = 0
    releases: int = 0
    withdrawals: int = 0
    superseded: int = 0
    # Permits taken back from holders found closed by the liveness check, or whose grant could not
    # be delivered because the holder workflow no longer runs.
    reclaimed: int = 0
    # Requests turned away because the queue was full (the holder asks again later).
    deferred: int = 0
    liveness_checks: int = 0
    continued_as_new: int = 0


class SemaphoreState(BaseModel):
    """Everything the semaphore carries across continue-as-new (also its `state` query and result)."""

    key: str
    max: int = Field(ge=1)
    holders: list[HolderInfo] = Field(default_factory=list)
    waiters: list[HolderInfo] = Field(default_factory=list)
    # Recently finished (released, withdrawn, superseded, reclaimed) tickets, oldest first: a late
    # or duplicated `acquire` for one of them is ignored instead of taking a permit again.
    finished: list[TicketRef] = Field(default_factory=list)
    next_request_seq: int = 1
    next_grant_seq: int = 1
    # When the pending liveness check is due (kept across continue-as-new, so the leak bound holds).
    next_liveness_check_at: datetime | None = None
    # Since when nothing is held or queued (the idle timeout counts from here, across continue-as-new).
    idle_since: datetime | None = None
    stats: SemaphoreStats = Field(default_factory=SemaphoreStats)
    # In the `state` query only: waiters past the first QUERY_WAITERS_SHOWN, left out of `waiters` (an
    # answer holds at most 2 MB, some 6,700 waiters as JSON).
    waiters_not_shown: int = 0

    def pack(self) -> bytes:
        """zlib-compressed JSON (defaults left out): what continue-as-new carries. As plain JSON a waiter
        costs ~310 bytes, so ~6,500 waiters would pass Temporal's 2 MB payload limit; packed, ~55."""
        return zlib.compress(self.model_dump_json(exclude_defaults=True).encode(), 9)

    @classmethod
    def unpack(cls, packed: bytes) -> SemaphoreState:
        return cls.model_validate_json(zlib.decompress(packed))


class SemaphoreInput(BaseModel):
    """Start argument of `ConcurrencySemaphoreWorkflow` (and of each of its continue-as-new runs)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    key: str = Field(min_length=1)
    max: int = Field(ge=1)
    # A holder that closed without releasing loses its permit at the next liveness check, i.e. within
    # this interval (plus the time one describe round takes). See workflows/concurrency.py.
    liveness_check_interval_seconds: float = Field(default=30.0, gt=0)
    # With no holder and no waiter for this long, the semaphore completes.
    idle_timeout_seconds: float = Field(default=300.0, ge=0)
    # Continue-as-new once the history has this many events (or when the server suggests it).
    continue_as_new_after_events: int = Field(default=10_000, ge=50)
    # How many finished tickets to remember for idempotency (about 120 bytes each in the carried state).
    finished_memory: int = Field(default=1000, ge=1)
    # At most this many waiters are queued; a request beyond is deferred (the holder asks again later).
    # The carried state holds the queue: 15,000 waiters pack to about 1.2 MB (20,000: 1.6 MB), within
    # Temporal's 2 MB payload limit with room to spare.
    max_waiters: int = Field(default=15_000, ge=1)
    # The carried state: `packed_state` (`SemaphoreState.pack`) since continue-as-new packs it; `state`
    # as histories written before carry it (and for a test that starts a semaphore with some state).
    state: SemaphoreState | None = None
    packed_state: bytes | None = None  # base64 in JSON

    def carried_state(self) -> SemaphoreState:
        if self.packed_state is not None:
            return SemaphoreState.unpack(self.packed_state)
        return self.state or SemaphoreState(key=self.key, max=self.max)


class HolderCheck(BaseModel):
    """Input of the `concurrency_check_holders` activity."""

    holder_workflow_ids: list[str]


class HolderCheckResult(BaseModel):
    # Holder workflow id -> why it is considered gone (its status, or "not_found").
    closed: dict[str, str] = Field(default_factory=dict)


class PermitHolderState(BaseModel):
    """Order-side state (`PermitHolder.snapshot()`), carried across the holder's continue-as-new."""

    key: str
    max: int | None = Field(default=None, ge=1)
    holder_workflow_id: str
    # Requests made so far; the n-th request for ticket T goes on the wire as "T#n".
    seq: int = 0
    # Ticket -> wire ticket, for requests not granted yet.
    pending: dict[str, str] = Field(default_factory=dict)
    # Ticket -> the grant held for it.
    held: dict[str, PermitGrant] = Field(default_factory=dict)
    # Recently released wire tickets (bounded, newest last).
    released: list[str] = Field(default_factory=list)
    # Ticket -> how many times in a row its requests found the queue full; a ticket here that is neither
    # pending nor held is deferred: to be requested again after `retry_after`.
    deferrals: dict[str, int] = Field(default_factory=dict)

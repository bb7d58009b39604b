"""Concurrency keys: one `ConcurrencySemaphoreWorkflow` per key, and the order-side `PermitHolder`.

The seed's `concurrency: {key, max}` caps how many of an organization's calls sharing `key` are *in a
call* at once. Each key has one semaphore workflow, id `concurrency-<organization id>:<key>` (see
`organization_key`), started by the first order that needs it with signal-with-start (activity
`concurrency_request_permit`); it completes by itself once idle.

Protocol (all payloads in `models.concurrency`)
-----------------------------------------------
- order -> semaphore, signal `acquire` (`PermitRequest`), sent by the activity, retried until it lands;
- semaphore -> order, signal `concurrency_granted` (`PermitGrant`, name `GRANT_SIGNAL`): the permit;
- semaphore -> order, signal `concurrency_deferred` (`PermitDeferral`, name `DEFER_SIGNAL`): the queue
  was full, nothing was queued; the order asks again later (`PermitHolder.retry_after`);
- order -> semaphore, signal `release` (`PermitRelease`): give the permit back, or withdraw the
  request; sent as an external-workflow signal from a shielded task, so it also works from a
  cancelled workflow's cleanup path;
- queries on the semaphore: `holders`, `waiters` (lists of `HolderInfo`) and `state` (`SemaphoreState`);
  the semaphore's "current details" in the Web UI read "`held/max` held, `n` waiting".

Exactness (never more than `max` holders)
-----------------------------------------
All state lives in the semaphore workflow and changes only in its deterministic signal handlers and
main loop, so worker crashes and workflow-task retries replay to the same state. A permit counts as
taken from the moment it is granted (before the grant signal is delivered). Acquire and release are
idempotent per (holder workflow id, ticket): a second `acquire` for a waiting ticket is ignored, one
for a held ticket re-sends the same grant (the holder ignores a grant it already has), and a bounded
memory of finished tickets (carried across continue-as-new) makes a late or duplicated `acquire` for
a released ticket a no-op. Grants go out first come, first served, in the order the `acquire`
signals reached the semaphore. A holder workflow holds at most one permit per key: a new ticket from
the same holder withdraws/releases its previous one (`PermitHolder.request` does the same on its side,
so both sides always agree).

Leak-freedom: liveness checks through the Temporal client, not leases
-------------------------------------------------------------------
While the semaphore has holders it runs `concurrency_check_holders` every
`liveness_check_interval_seconds` (default 30 s): one activity that describes every holder workflow
(by workflow id, i.e. its latest run) and reports those that are not RUNNING (terminated, timed out,
failed, completed, not found). Their permits are reclaimed and handed to the next waiters.

**Leak bound:** a holder that closes without releasing loses its permit at most
`liveness_check_interval_seconds` (30 s) after it closed, plus the time one describe round takes
(milliseconds; longer only while the Temporal frontend itself is unreachable). Measured in workflow
time; `tests/test_concurrency.py` proves it with a terminated holder.

Why not leases: a lease the holder renews costs every holder a timer and a signal per renewal period
for the whole call (hours, for long calls), grows the semaphore's history with every holder, and needs
the order's code to keep a background loop alive. The liveness check costs nothing in the holders,
one activity per interval in the semaphore, and needs no cooperation from the holder, which is exactly
what a terminated holder cannot give. Other ways a permit could be stranded are closed too:
- a grant that cannot be delivered (the holder workflow no longer runs) frees the permit at once;
- a grant for a ticket the holder no longer wants (released, superseded, or after a reset) is
  given back by `PermitHolder.on_grant`;
- a reset holder is RUNNING under the same workflow id, so it keeps its permit as its replayed
  history says. Reset after the grant: it holds, as before. Reset before the request: the reapplied
  grant (Temporal reapplies signals by default) is stale and handed back, and the new run's request
  for the same ticket counts as new because it comes from another run id (requests carry the
  holder's run id: a finished ticket requested again by the *same* run is a late duplicate, by
  another run a new request; a still-held ticket requested again gets its grant re-sent).
  Limitation: a reset between request and grant that does *not* reapply signals leaves that run
  waiting for a grant the semaphore believes it delivered; reset with signals reapplied (the
  default), or terminate and re-place the order.
Waiters are not described (the queue can be long): a waiter that was cancelled withdraws through
`PermitHolder.release`; one that closed without withdrawing is dropped when its grant fails to deliver.

Bounded queue: at most `max_waiters` (default 15,000) wait. A request beyond them changes nothing at
the semaphore and is answered with `concurrency_deferred`; the holder asks again after a backoff (one
minute, doubling up to an hour), then joins the back of the queue if there is room. So however many
orders share a key, the state continue-as-new carries stays within Temporal's payload limit (a queue
of some 29,000 waiters would not), at the cost of strict first-come-first-served for the overflow.

`max` changes: the max of the most recent *new* request applies (a duplicated or retried request never
reverts it). Raising it grants waiters at once; lowering it revokes nothing: current holders finish
their calls and no new permit is granted until fewer than the new max hold one.

Bounded history: the semaphore continues-as-new when the server suggests it or its history reaches
`continue_as_new_after_events` (a `SemaphoreInput` field a test can lower). Before it does, it waits
for in-flight grant deliveries and a running liveness check and for all handlers, then carries
holders, waiters (in order), finished tickets and counters into the new run; signals that arrive
meanwhile make the server reject the continue-as-new and are handled first, so nothing is lost or
granted twice. With no holder and no waiter for `idle_timeout_seconds` (default 300 s) it completes.
An operator must not terminate a semaphore that has holders or waiters: a fresh run would not know
them, and its waiters, whose request it held, would wait for ever (cancel or re-place those orders).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.concurrency import (
        ACQUIRE_SIGNAL,
        ConcurrencyActivities,
        organization_key,
        semaphore_workflow_id,
    )
    from models.concurrency import (
        HolderCheck,
        HolderInfo,
        PermitDeferral,
        PermitGrant,
        PermitHolderState,
        PermitRelease,
        PermitRequest,
        SemaphoreInput,
        SemaphoreState,
        TicketRef,
    )
    from workflows.inputs import INVALID_INPUT, admitted_input, signal_argument

__all__ = [
    "ACQUIRE_SIGNAL",
    "DEFER_SIGNAL",
    "GRANT_SIGNAL",
    "HOLDERS_QUERY",
    "RELEASE_SIGNAL",
    "STATE_QUERY",
    "WAITERS_QUERY",
    "ConcurrencySemaphoreWorkflow",
    "PermitHolder",
    "organization_key",
    "semaphore_workflow_id",
]

GRANT_SIGNAL = "concurrency_granted"  # every holder workflow defines a signal with this name
DEFER_SIGNAL = "concurrency_deferred"  # ... and this one (the queue was full: ask again later)
# Patch id: a request that finds `max_waiters` waiting is deferred; before, every request was queued
# (and past some 29,000 waiters the carried state outgrew Temporal's payload limit).
BOUNDED_QUEUE = "bounded-queue"
# Patch id: waiters about to take a free permit do not count against `max_waiters` (before, of two requests
# reaching an idle key with `max_waiters` 1 in one workflow task, the second was turned away).
FREE_PERMITS_FIRST = "free-permits-first"
# Temporal's cancellation of a semaphore is ignored (before, it ended it and stranded its queue).
CANCELLATION_IGNORED = "cancellation-ignored"
RELEASE_SIGNAL = "release"
HOLDERS_QUERY = "holders"
WAITERS_QUERY = "waiters"
STATE_QUERY = "state"
# The `waiters` and `state` queries show the first waiters in line, up to this many: a query's answer
# holds at most 2 MB (Temporal's limit), about 6,700 waiters as JSON, and a key may have 15,000.
QUERY_WAITERS_SHOWN = 1_000

Ref = tuple[str, str]  # (holder workflow id, ticket)


def _carried_state(input: SemaphoreInput) -> SemaphoreState:
    """The state this run carries on, for the key its workflow id names: a packed state that cannot be
    read, or a key another semaphore's (its grants ignored by its holders, who would wait for ever),
    fails the semaphore at once."""
    try:
        state = input.carried_state()
    except Exception as err:  # noqa: BLE001 — zlib's or pydantic's, on a state set by hand
        raise ApplicationError(
            f"invalid input: its carried state cannot be read ({type(err).__name__})",
            type=INVALID_INPUT,
            non_retryable=True,
        ) from None
    if semaphore_workflow_id(state.key) != workflow.info().workflow_id:
        raise ApplicationError(
            f"invalid input: key {state.key!r} is not this semaphore's: its id is the key's, "
            f"{semaphore_workflow_id('<key>')}",
            type=INVALID_INPUT,
            non_retryable=True,
        )
    return state


@workflow.defn(name="ConcurrencySemaphoreWorkflow")
class ConcurrencySemaphoreWorkflow:
    @workflow.init
    def __init__(self, input: RawValue) -> None:
        self._input = admitted_input(SemaphoreInput, input)
        state = _carried_state(self._input)
        self._key = state.key
        self._max = state.max
        # Both dicts keep insertion order: holders by grant, waiters by arrival (FIFO).
        self._holders: dict[Ref, HolderInfo] = {(h.holder_workflow_id, h.ticket): h for h in state.holders}
        self._waiters: dict[Ref, HolderInfo] = {(w.holder_workflow_id, w.ticket): w for w in state.waiters}
        # Finished ref -> the run id that requested it (see `acquire`).
        self._finished: dict[Ref, str | None] = {
            (f.holder_workflow_id, f.ticket): f.run_id for f in state.finished
        }
        self._current: dict[str, Ref] = {ref[0]: ref for ref in [*self._holders, *self._waiters]}
        self._next_request_seq = state.next_request_seq
        self._next_grant_seq = state.next_grant_seq
        self._stats = state.stats.model_copy()
        self._next_check_at = state.next_liveness_check_at
        self._idle_since = state.idle_since
        self._inflight: set[Ref] = set()
        self._deferring = 0  # deferral signals in flight
        self._checking = False
        self._dirty = False

    # ---- signals -------------------------------------------------------------------------------

    @workflow.signal(name=ACQUIRE_SIGNAL)
    def acquire(self, *args: Any) -> None:  # one PermitRequest (`signal_argument`)
        request = signal_argument(PermitRequest, args, ACQUIRE_SIGNAL)
        if request is None:
            return
        ref = (request.holder_workflow_id, request.ticket)
        if ref in self._finished:
            finished_by = self._finished[ref]
            if finished_by is None or request.holder_run_id in (None, finished_by):
                self._stats.duplicate_requests += 1  # a late or repeated request: already done
                return
            # The same ticket from another run of the holder (reset, or its id reused): a new request.
            del self._finished[ref]
        if ref in self._waiters:
            self._stats.duplicate_requests += 1
            self._waiters[ref].holder_run_id = request.holder_run_id or self._waiters[ref].holder_run_id
            return
        if ref in self._holders:
            # Re-send the same grant: the holder may have lost it (e.g. reset before its request).
            self._stats.duplicate_requests += 1
            info = self._holders[ref]
            info.holder_run_id = request.holder_run_id or info.holder_run_id
            info.delivered = False
            self._dirty = True
            return
        if self._queue_full() and workflow.patched(BOUNDED_QUEUE):
            self._defer(request)  # nothing queued, nothing changes: the holder asks again later
            return
        self._stats.requests += 1
        if request.max is not None:  # without one, the key keeps its limit
            self._max = request.max
        previous = self._current.get(request.holder_workflow_id)
        if previous is not None:
            self._finish(previous, "superseded")
        self._waiters[ref] = HolderInfo(
            holder_workflow_id=request.holder_workflow_id,
            ticket=request.ticket,
            max=self._max,
            holder_run_id=request.holder_run_id,
            request_seq=self._next_request_seq,
            queued_at=workflow.now(),
            requested_at=request.requested_at,
        )
        self._next_request_seq += 1
        self._current[request.holder_workflow_id] = ref
        self._dirty = True

    @workflow.signal(name=RELEASE_SIGNAL)
    def release(self, *args: Any) -> None:  # one PermitRelease
        release = signal_argument(PermitRelease, args, RELEASE_SIGNAL)
        if release is None:
            return
        ref = (release.holder_workflow_id, release.ticket)
        if ref in self._holders or ref in self._waiters:
            self._finish(ref, release.reason)
        elif ref not in self._finished:
            # Released before its `acquire` arrived (a cancelled request): remember it, so the late
            # `acquire` does not take a permit.
            self._remember_finished(ref, release.holder_run_id)
        self._dirty = True

    # ---- queries -------------------------------------------------------------------------------

    @workflow.query(name=HOLDERS_QUERY)
    def holders(self) -> list[HolderInfo]:
        return list(self._holders.values())

    @workflow.query(name=WAITERS_QUERY)
    def waiters(self) -> list[HolderInfo]:
        """The first QUERY_WAITERS_SHOWN waiters, in line (`state` says how many more)."""
        return list(itertools.islice(self._waiters.values(), QUERY_WAITERS_SHOWN))

    @workflow.query(name=STATE_QUERY)
    def state(self) -> SemaphoreState:
        return self._state(waiters_shown=QUERY_WAITERS_SHOWN)

    # ---- main loop -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RawValue) -> SemaphoreState:  # a SemaphoreInput (`__init__`)
        liveness = asyncio.create_task(self._liveness_loop())
        while True:
            try:
                if await self._serve(liveness):
                    return self._state()
            except asyncio.CancelledError:  # the Web UI's "Request Cancellation", `temporal workflow cancel`
                if not workflow.patched(CANCELLATION_IGNORED):  # a run cancelled so before: it ended
                    raise
                # Ended, it would leave its holders' permits and its waiters' turns unanswered for good
                # (the waiting orders stayed `queued_for_calling`): it serves on, and ends once idle.
                workflow.logger.warning(
                    "cancellation ignored: %d holders and %d waiters depend on this semaphore; it ends by "
                    "itself once idle",
                    len(self._holders),
                    len(self._waiters),
                )

    async def _serve(self, liveness: asyncio.Task) -> bool:
        """Grant what is free, then wait for a change; True once idle long enough to end."""
        while True:
            self._dispatch()
            if self._continue_as_new_due():
                await self._continue_as_new(liveness)
            if self._idle():
                if await self._wait_idle():
                    liveness.cancel()
                    return True
                continue
            self._idle_since = None
            self._dirty = False
            await workflow.wait_condition(lambda: self._dirty or self._continue_as_new_due())

    def _dispatch(self) -> None:
        now = workflow.now()
        while self._waiters and len(self._holders) < self._max:
            ref = next(iter(self._waiters))
            info = self._waiters.pop(ref)
            info.granted_at = now
            info.grant_seq = self._next_grant_seq
            info.delivered = False
            self._next_grant_seq += 1
            self._stats.grants += 1
            self._holders[ref] = info
        for ref, info in self._holders.items():
            if not info.delivered and ref not in self._inflight:
                self._inflight.add(ref)
                asyncio.create_task(self._deliver(ref, info))
        full = " (full: new requests deferred)" if len(self._waiters) >= self._input.max_waiters else ""
        workflow.set_current_details(
            f"{len(self._holders)}/{self._max} held, {len(self._waiters)} waiting{full} (key {self._key!r})"
        )

    async def _deliver(self, ref: Ref, info: HolderInfo) -> None:
        assert info.granted_at is not None and info.grant_seq is not None
        grant = PermitGrant(
            key=self._key,
            ticket=info.ticket,
            holder_workflow_id=info.holder_workflow_id,
            granted_at=info.granted_at,
            request_seq=info.request_seq,
            grant_seq=info.grant_seq,
        )
        try:
            await workflow.get_external_workflow_handle(info.holder_workflow_id).signal(GRANT_SIGNAL, grant)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Signalling an external workflow only fails when it no longer runs: reclaim at once.
            if self._holders.get(ref) is info:
                workflow.logger.warning("grant to %s undeliverable (%s); reclaiming", ref, err)
                self._stats.reclaimed += 1
                self._finish(ref, "reclaimed")
        else:
            if self._holders.get(ref) is info:
                info.delivered = True
        finally:
            self._inflight.discard(ref)
            self._dirty = True

    def _queue_full(self) -> bool:
        """`max_waiters` wait for a permit. Requests that arrived since the last dispatch sit among the
        waiters until it runs: those a free permit awaits do not count."""
        waiting = len(self._waiters)
        if waiting < self._input.max_waiters:
            return False
        free = max(0, self._max - len(self._holders))
        if free and workflow.patched(FREE_PERMITS_FIRST):
            return waiting - free >= self._input.max_waiters
        return True

    def _defer(self, request: PermitRequest) -> None:
        self._stats.deferred += 1
        deferral = PermitDeferral(
            key=self._key,
            ticket=request.ticket,
            holder_workflow_id=request.holder_workflow_id,
            waiting=len(self._waiters),
        )
        self._deferring += 1
        asyncio.create_task(self._send_deferral(deferral))

    async def _send_deferral(self, deferral: PermitDeferral) -> None:
        try:
            holder = workflow.get_external_workflow_handle(deferral.holder_workflow_id)
            await holder.signal(DEFER_SIGNAL, deferral)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the holder no longer runs: it asks for nothing
            workflow.logger.info("deferral to %s undeliverable (%s)", deferral.holder_workflow_id, err)
        finally:
            self._deferring -= 1
            self._dirty = True

    async def _liveness_loop(self) -> None:
        interval = timedelta(seconds=self._input.liveness_check_interval_seconds)
        while True:
            await workflow.wait_condition(lambda: bool(self._holders))
            if self._next_check_at is None:
                self._next_check_at = workflow.now() + interval
            delay = self._next_check_at - workflow.now()
            if delay > timedelta(0):
                await workflow.sleep(delay, summary="holder liveness check")
            self._next_check_at = None
            if not self._holders:
                continue
            self._checking = True
            try:
                await self._check_liveness()
            finally:
                self._checking = False
                self._dirty = True

    async def _check_liveness(self) -> None:
        checked = dict(self._holders)
        ids = list(dict.fromkeys(wid for wid, _ in checked))
        self._stats.liveness_checks += 1
        try:
            result = await workflow.execute_activity_method(
                ConcurrencyActivities.concurrency_check_holders,
                HolderCheck(holder_workflow_ids=ids),
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                summary=f"describe {len(ids)} holder(s)",
            )
        except ActivityError as err:
            workflow.logger.warning("liveness check failed, retrying next interval: %s", err)
            return
        for ref, info in checked.items():
            if ref[0] in result.closed and self._holders.get(ref) is info:
                workflow.logger.warning("holder %s is %s; reclaiming its permit", ref, result.closed[ref[0]])
                self._stats.reclaimed += 1
                self._finish(ref, "reclaimed")

    def _idle(self) -> bool:
        return not (self._holders or self._waiters or self._inflight or self._deferring or self._checking)

    async def _wait_idle(self) -> bool:
        """Wait while idle; True once idle for the whole idle timeout (the semaphore may end)."""
        now = workflow.now()
        if self._idle_since is None:
            self._idle_since = now
        remaining = self._idle_since + timedelta(seconds=self._input.idle_timeout_seconds) - now
        if remaining <= timedelta(0):
            # Signals delivered with the timer have already run their handlers, so this is current.
            return workflow.all_handlers_finished()
        self._dirty = False
        try:
            await workflow.wait_condition(
                lambda: self._dirty or self._continue_as_new_due(),
                timeout=remaining,
                timeout_summary="idle: complete unless a request arrives",
            )
        except TimeoutError:
            pass
        return False  # look again: new requests, continue-as-new, or the timeout has passed

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._input.continue_as_new_after_events
        )

    async def _continue_as_new(self, liveness: asyncio.Task) -> None:
        # No new grants from here on; let deliveries and a running check finish, then carry state.
        await workflow.wait_condition(lambda: not (self._inflight or self._deferring or self._checking))
        liveness.cancel()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._stats.continued_as_new += 1
        carried = {"state": None, "packed_state": self._state().pack()}  # packed: see SemaphoreState.pack
        workflow.continue_as_new(self._input.model_copy(update=carried))

    # ---- state ---------------------------------------------------------------------------------

    def _finish(self, ref: Ref, reason: str) -> None:
        run_id = None
        if (info := self._holders.pop(ref, None)) is not None:
            run_id = info.holder_run_id
            if reason not in ("reclaimed", "superseded"):
                self._stats.releases += 1
        elif (info := self._waiters.pop(ref, None)) is not None:
            run_id = info.holder_run_id
            if reason not in ("reclaimed", "superseded"):
                self._stats.withdrawals += 1
        if reason == "superseded":
            self._stats.superseded += 1
        if self._current.get(ref[0]) == ref:
            del self._current[ref[0]]
        self._remember_finished(ref, run_id)
        self._dirty = True

    def _remember_finished(self, ref: Ref, run_id: str | None) -> None:
        self._finished.pop(ref, None)
        self._finished[ref] = run_id
        while len(self._finished) > self._input.finished_memory:
            del self._finished[next(iter(self._finished))]

    def _state(self, waiters_shown: int | None = None) -> SemaphoreState:
        """Everything (continue-as-new, the result), or for a query the first `waiters_shown` waiters."""
        shown = itertools.islice(self._waiters.values(), waiters_shown)
        not_shown = 0 if waiters_shown is None else max(0, len(self._waiters) - waiters_shown)
        return SemaphoreState(
            key=self._key,
            max=self._max,
            holders=[h.model_copy() for h in self._holders.values()],
            waiters=[w.model_copy() for w in shown],
            waiters_not_shown=not_shown,
            finished=[
                TicketRef(holder_workflow_id=w, ticket=t, run_id=run)
                for (w, t), run in self._finished.items()
            ],
            next_request_seq=self._next_request_seq,
            next_grant_seq=self._next_grant_seq,
            next_liveness_check_at=self._next_check_at,
            idle_since=self._idle_since,
            stats=self._stats.model_copy(),
        )


RELEASED_MEMORY = 64
DEFERRAL_FIRST = timedelta(minutes=1)
DEFERRAL_LONGEST = timedelta(hours=1)


def deferral_backoff(deferrals: int) -> timedelta:
    """How long a holder waits to ask again after its request found the queue full for the
    `deferrals`-th time in a row: one minute, doubling, at most an hour (so an order that waits for
    days asks about 24 times a day: its history stays small, the semaphore's load light)."""
    return min(DEFERRAL_FIRST * 2 ** min(max(deferrals - 1, 0), 6), DEFERRAL_LONGEST)


class PermitHolder:
    """Order-side helper, used inside a holder workflow (deterministic; I/O only through activities).

    The holder workflow must define the grant and deferral signals and forward them::

        @workflow.signal(name=GRANT_SIGNAL)
        def concurrency_granted(self, grant: PermitGrant) -> None:
            self._permits.on_grant(grant)

        @workflow.signal(name=DEFER_SIGNAL)
        def concurrency_deferred(self, deferral: PermitDeferral) -> None:
            self._permits.on_deferral(deferral)

    Then, per attempt: ``await permits.request(ticket)`` (status `queued_for_calling`),
    ``await workflow.wait_condition(lambda: permits.granted(ticket) or permits.deferred(ticket) ...)``
    (deferred: sleep ``permits.retry_after(ticket)``, request again, wait again), call, and
    ``await permits.release(ticket)`` in a ``finally``. Nothing else is needed while holding: the
    semaphore checks holder liveness itself. A ticket (the attempt id) may be requested again after
    it was released (a permit handed back because the calling window closed): each request gets a
    fresh wire ticket (``<ticket>#<n>``), so every (order, request) is idempotent at the semaphore.
    One permit per order: requesting a ticket releases any other ticket this holder has.
    Across the holder's continue-as-new: ``PermitHolder.restore(permits.snapshot())``; call
    ``await permits.settle()`` first so no release is left in flight.
    """

    def __init__(
        self,
        key: str,
        max: int | None,
        holder_workflow_id: str,
        *,
        semaphore_task_queue: str | None = None,
        request_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.key = key
        self.max = max
        self.holder_workflow_id = holder_workflow_id
        self.semaphore_task_queue = semaphore_task_queue
        self.request_timeout = request_timeout
        self._seq = 0
        self._pending: dict[str, str] = {}  # ticket -> wire ticket
        self._held: dict[str, PermitGrant] = {}  # ticket -> grant (grant.ticket is the wire ticket)
        self._released: list[str] = []  # wire tickets, newest last
        # Ticket -> full queues met in a row; one neither pending nor held is deferred (ask again later).
        self._deferrals: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        # The workflow this holder belongs to (its event loop), so no other workflow sends its commands.
        self._home = asyncio.get_running_loop() if workflow.in_workflow() else None

    # ---- state across continue-as-new ----------------------------------------------------------

    def snapshot(self) -> PermitHolderState:
        return PermitHolderState(
            key=self.key,
            max=self.max,
            holder_workflow_id=self.holder_workflow_id,
            seq=self._seq,
            pending=dict(self._pending),
            held={t: g.model_copy() for t, g in self._held.items()},
            released=list(self._released),
            deferrals=dict(self._deferrals),
        )

    @classmethod
    def restore(cls, state: PermitHolderState, *, semaphore_task_queue: str | None = None) -> PermitHolder:
        holder = cls(
            state.key, state.max, state.holder_workflow_id, semaphore_task_queue=semaphore_task_queue
        )
        holder._seq = state.seq
        holder._pending = dict(state.pending)
        holder._held = dict(state.held)
        holder._released = list(state.released)
        holder._deferrals = dict(state.deferrals)
        return holder

    # ---- API -----------------------------------------------------------------------------------

    def granted(self, ticket: str) -> bool:
        return ticket in self._held

    def waiting(self, ticket: str) -> bool:
        return ticket in self._pending

    def deferred(self, ticket: str) -> bool:
        """The last request for `ticket` found the queue full: request it again after `retry_after`."""
        return ticket in self._deferrals and ticket not in self._pending and ticket not in self._held

    def retry_after(self, ticket: str) -> timedelta:
        return deferral_backoff(self._deferrals.get(ticket, 1))

    @property
    def held_tickets(self) -> list[str]:
        return list(self._held)

    async def request(self, ticket: str) -> None:
        """Join the key's queue for `ticket` (no-op if it is already waiting or held); again, after the
        queue was full."""
        if ticket in self._pending or ticket in self._held:
            return
        for other in dict.fromkeys([*self._pending, *self._held, *self._deferrals]):  # in order: replay
            if other != ticket:
                await self.release(other)
        self._seq += 1
        wire = f"{ticket}#{self._seq}"
        self._pending[ticket] = wire
        await workflow.execute_activity_method(
            ConcurrencyActivities.concurrency_request_permit,
            PermitRequest(
                key=self.key,
                ticket=wire,
                holder_workflow_id=self.holder_workflow_id,
                max=self.max,
                requested_at=workflow.now(),
                semaphore_task_queue=self.semaphore_task_queue,
                holder_run_id=workflow.info().run_id,
            ),
            start_to_close_timeout=self.request_timeout,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary=f"queue for a permit of concurrency key {self.key!r}",
        )

    def on_grant(self, grant: PermitGrant) -> None:
        """Handle the `concurrency_granted` signal."""
        if grant.key != self.key or grant.holder_workflow_id != self.holder_workflow_id:
            workflow.logger.warning("ignoring a grant for another key or holder: %s", grant)
            return
        for ticket, wire in self._pending.items():
            if wire == grant.ticket:
                del self._pending[ticket]
                self._held[ticket] = grant
                self._deferrals.pop(ticket, None)
                return
        if any(g.ticket == grant.ticket for g in self._held.values()):
            return  # duplicate delivery
        # A grant nobody here waits for (released meanwhile, or after a reset): hand it back.
        self._spawn_release(grant.ticket, "stale_grant")

    def on_deferral(self, deferral: PermitDeferral) -> None:
        """Handle the `concurrency_deferred` signal: the request was not queued (the queue was full)."""
        if deferral.key != self.key or deferral.holder_workflow_id != self.holder_workflow_id:
            workflow.logger.warning("ignoring a deferral for another key or holder: %s", deferral)
            return
        for ticket, wire in self._pending.items():
            if wire == deferral.ticket:  # else a deferral of a request withdrawn since: nothing to do
                del self._pending[ticket]
                self._deferrals[ticket] = self._deferrals.get(ticket, 0) + 1
                return

    async def release(self, ticket: str) -> None:
        """Give back the permit for `ticket`, or withdraw its request. Idempotent; safe if never
        requested; works from a cancelled workflow's cleanup path (the signal is shielded)."""
        self._deferrals.pop(ticket, None)  # deferred: not queued, nothing to tell the semaphore
        wire = self._pending.pop(ticket, None)
        if wire is None and ticket in self._held:
            wire = self._held.pop(ticket).ticket
        if wire is None:
            return
        task = self._spawn_release(wire, "released")
        if task is not None:
            await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait until no release signal is in flight (before continue-as-new or completing)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- internals -----------------------------------------------------------------------------

    def _spawn_release(self, wire: str, reason: str) -> asyncio.Task | None:
        if wire not in self._released:
            self._released.append(wire)
            del self._released[:-RELEASED_MEMORY]
        if not self._at_home():
            # A cleanup path run after the worker discarded this workflow from memory (not a real end
            # of the workflow): the garbage collector closed its coroutine on whatever ran then.
            return None
        task = asyncio.create_task(self._signal_release(wire, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _at_home(self) -> bool:
        """Running in this holder's own workflow. Not so when the garbage collector closes a coroutine of
        an order the worker let go: that runs on no loop, or on another workflow's, where a release
        signal would join that workflow's history (which then fails to replay: a nondeterminism error)."""
        return workflow.in_workflow() and asyncio.get_running_loop() is self._home

    async def _signal_release(self, wire: str, reason: str) -> None:
        handle = workflow.get_external_workflow_handle(semaphore_workflow_id(self.key))
        try:
            await handle.signal(
                RELEASE_SIGNAL,
                PermitRelease(
                    ticket=wire,
                    holder_workflow_id=self.holder_workflow_id,
                    reason=reason,
                    holder_run_id=workflow.info().run_id,
                ),
            )
        except Exception as err:
            # The semaphore does not run, so it holds nothing for us; a request still in flight
            # would be caught when its grant comes back (stale grant) or cannot be delivered.
            workflow.logger.info("release of %s not delivered (%s)", wire, err)

"""CampaignWorkflow: start one CallOrderWorkflow per row of a campaign, paced, pausable, cancellable.

The story of a launch: take as many rows as the pacing bucket allows now; have an activity start
their orders (reading the pending rows from the database, in row order after the cursor); repeat
until no row is pending; continue-as-new when the history grows long, carrying the cursor, the counts
and the bucket. Each order is its own durable call order (own timezone, windows, retries, outcome);
all share the campaign's concurrency key, so the semaphore keeps at most `max_concurrent_calls` of
them in a call.

No row is started twice: its order's id `call-<call id>` is the row's (fixed when the campaign was
created) and is started with REJECT_DUPLICATE, so a retry, a replay, a continue-as-new or a second
launch that meets it again counts it `already_started`. The orders are independent workflows (started
by the activity; activities/campaigns.py says why not children): they outlive this workflow and its
runs, and the campaign reaches them by id (the rows' call ids, in the database) to steer them.

Signals: `launch` (rows were marked pending: read again from the start), `pause` (start nothing more;
the started orders are told to pause: those in a call finish it, then wait), `resume`, `cancel`
(rows not started are cancelled, waiting orders are cancelled, orders in a call finish it first).
Query `progress`. The rows' call statistics are read from the database, not from here.

At most `max_in_flight` of its orders run at once (started, not ended): past that the campaign waits
for some to end, so the shared key's semaphore never queues more than its payload can carry.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as TemporalCancelled

with workflow.unsafe.imports_passed_through():
    import workflows.pacing as pacing
    from activities.campaigns import CampaignActivities
    from models.campaign import (
        CampaignInput,
        CampaignProgress,
        CampaignState,
        InFlightRequest,
        LaunchRowsRequest,
        LaunchRowsResult,
        SteerAction,
        SteerRequest,
        SteerResult,
    )
    from workflows.inputs import admitted_input

DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


# Temporal's cancellation of the workflow means its cancel signal (before, it ended the run).
CANCELLED_BY_TEMPORAL = "cancelled-by-temporal-means-cancel"

# A run that a cancel, pause or resume starts after the launch's run ended knows nothing of that launch:
# its details say so, rather than "started no order" of a campaign that did.
RUN_OF_ITS_OWN = "this run started no order (each run counts its own: an earlier one may have)"


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow:
    @workflow.init
    def __init__(self, input: RawValue) -> None:
        self.input = input = admitted_input(CampaignInput, input)
        self.campaign_id = input.campaign_id
        self.state = input.state or CampaignState()
        if input.state is None:  # a fresh run: the orders are as the API last told them
            self.state.progress.paused = input.paused
            self.state.progress.steered = input.steered
            self.state.progress.orders_paused = input.orders_paused
        self.progress = self.state.progress
        self._launching: workflow.ActivityHandle[LaunchRowsResult] | None = None  # a batch being started

    # -- the story ---------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RawValue) -> CampaignProgress:  # a CampaignInput (`__init__`)
        try:
            await self._launch_until_done()
        except (asyncio.CancelledError, ActivityError) as err:
            if isinstance(err, ActivityError) and not isinstance(err.cause, TemporalCancelled):
                raise
            if not workflow.patched(CANCELLED_BY_TEMPORAL):  # a run cancelled so before: it ended,
                if self._launching is not None:  # its batch cancelled (as awaited, not shielded, then)
                    self._launching.cancel()
                raise
            # Temporal's cancellation (the Web UI's, `temporal workflow cancel`) means the cancel signal:
            # it ended the run and left the campaign `running`, its rows pending for good. A batch being
            # started ends first: its orders are then the launched rows the cancel reaches.
            if self._launching is not None:
                with contextlib.suppress(ActivityError):  # a batch that failed started nothing more
                    self._count(await self._launching)
                self._launching = None
            self.progress.cancelled = True
            await self._cancel_everything()
        self._phase("done")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress

    async def _launch_until_done(self) -> None:
        while True:
            if self.progress.cancelled:
                await self._cancel_everything()
                break
            if self.progress.paused != self.progress.orders_paused:
                await self._tell_orders("pause" if self.progress.paused else "resume")
                continue
            if self.progress.paused:
                self._phase("paused")
                await workflow.wait_condition(lambda: self._steering_due())
                continue
            if await self._launch_paced_batch():
                if self._continue_as_new_due():
                    await self._continue_as_new()
                continue
            if self.state.rescan or self._steering_due():  # a signal arrived meanwhile
                continue
            break  # no row is pending: the orders run on by themselves

    async def _launch_paced_batch(self) -> bool:
        """Start as many rows as the bucket allows now; False when no row is pending any more."""
        if self.state.rescan:
            self.state.rescan = False
            self.progress.cursor = -1
        room = self.input.max_in_flight - self.state.in_flight
        if room <= 0:
            await self._wait_for_orders_to_end()
            return True
        granted, self.state.pace, wait = pacing.take(
            self.state.pace, workflow.now(), self.input.pace, min(self.input.batch_size, room)
        )
        if granted == 0:
            try:
                await workflow.wait_condition(
                    lambda: self._steering_due(), timeout=timedelta(seconds=wait), timeout_summary="pacing"
                )
            except TimeoutError:
                pass
            return True
        self._phase("launching")
        launching = workflow.start_activity_method(
            CampaignActivities.campaign_launch_rows,
            LaunchRowsRequest(
                campaign_id=self.campaign_id,
                organization_id=self.input.organization_id,
                after_row_index=self.progress.cursor,
                limit=granted,
                task_queue=workflow.info().task_queue,
            ),
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=self.input.launch_heartbeat_seconds),  # a dead worker's batch
            retry_policy=DB_RETRY,
            summary=f"start up to {granted} orders after row #{self.progress.cursor}",
        )
        self._launching = launching
        result = await asyncio.shield(launching)  # the batch outlives Temporal's cancellation (`run`)
        self._launching = None
        return self._count(result)

    def _count(self, result: LaunchRowsResult) -> bool:
        """What a batch did, in the progress; False when no row is pending any more."""
        if not result.found:  # deleted: start nothing more
            self.progress.cancelled = True
            return False
        self.progress.started += result.started
        self.progress.already_started += result.already_started
        self.state.in_flight = result.in_flight
        for skip in result.skipped:
            self.progress.skipped[skip.reason] = self.progress.skipped.get(skip.reason, 0) + 1
        if result.cursor is None:
            return False
        self.progress.cursor = result.cursor
        self._show()
        return result.rows_left

    async def _wait_for_orders_to_end(self) -> None:
        """`max_in_flight` orders run: start nothing until some end (or a signal steers)."""
        self._phase("waiting")
        try:
            await workflow.wait_condition(
                lambda: self._steering_due(),
                timeout=timedelta(seconds=self.input.in_flight_recheck_seconds),
                timeout_summary=f"{self.state.in_flight} orders running: waiting for some to end",
            )
        except TimeoutError:
            self.state.in_flight = await workflow.execute_activity_method(
                CampaignActivities.campaign_orders_in_flight,
                InFlightRequest(campaign_id=self.campaign_id, organization_id=self.input.organization_id),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=DB_RETRY,
                summary="count the orders still running",
            )

    # -- steering the started orders ---------------------------------------------------------------

    async def _tell_orders(self, action: SteerAction) -> SteerResult:
        result = await workflow.execute_activity_method(
            CampaignActivities.campaign_steer_orders,
            SteerRequest(
                campaign_id=self.campaign_id, organization_id=self.input.organization_id, action=action
            ),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=DB_RETRY,
            summary=f"{action} the campaign's orders",
        )
        self.progress.orders_paused = action != "resume"
        return result

    async def _cancel_everything(self) -> None:
        """Cancel the rows not started and the waiting orders; orders in a call finish it (they are
        paused meanwhile) and are cancelled on a later round, until none is left."""
        self._phase("cancelling")
        while (await self._tell_orders("cancel")).in_call:
            await workflow.sleep(
                timedelta(seconds=self.input.cancel_recheck_seconds),
                summary="waiting for the calls in progress to end",
            )

    # -- signals and queries -----------------------------------------------------------------------

    @workflow.signal
    def launch(self) -> None:
        self.state.rescan = True

    @workflow.signal
    def pause(self, steered: int | None = None) -> None:
        self._steer(True, steered)

    @workflow.signal
    def resume(self, steered: int | None = None) -> None:
        self._steer(False, steered)

    def _steer(self, paused: bool, steered: int | None) -> None:
        """Apply a pause or resume unless a later one, stored after it, was applied first (sent
        together, their signals may arrive in either order). Unnumbered (before numbering): applied."""
        if steered is not None:
            if steered < self.progress.steered:
                return
            self.progress.steered = steered
        self.progress.paused = paused

    @workflow.signal
    def cancel(self) -> None:
        self.progress.cancelled = True

    @workflow.query(name="progress")
    def get_progress(self) -> CampaignProgress:
        return self.progress

    # -- bookkeeping -------------------------------------------------------------------------------

    def _steering_due(self) -> bool:
        return self.progress.cancelled or self.progress.paused != self.progress.orders_paused

    def _phase(self, phase: str) -> None:
        self.progress.phase = phase  # type: ignore[assignment]
        self._show()

    def _show(self) -> None:
        """The Web UI's current details: the phase and how far the launch went (each run shows its own;
        orders an earlier try of a batch started before its worker died count as started)."""
        started = self.progress.started + self.progress.already_started
        phase = self.progress.phase
        if phase == "done" and self.progress.cancelled:
            phase = "done, cancelled"  # the rows it had not started are cancelled too
        if (
            self.progress.phase == "done"
            and started == 0
            and self.progress.cursor < 0
            and not self.progress.skipped
        ):
            # a run that only steered (a pause, resume or cancel after the launch's run had ended)
            workflow.set_current_details(f"**{phase}**: no row pending; {RUN_OF_ITS_OWN}")
            return
        if self.progress.cursor < 0 and started == 0:  # e.g. paused by a run that only steers
            workflow.set_current_details(f"**{phase}**: this run has started no order yet")
            return
        workflow.set_current_details(
            f"**{phase}**: {started} order{'s' * (started != 1)} started, "
            f"cursor at row #{self.progress.cursor}"
        )

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.input.continue_as_new_after_events
        )

    async def _continue_as_new(self) -> None:
        """Carry the cursor, the counts and the pacing bucket; pending rows stay in the database (and
        are marked launched once started), so nothing is lost and nothing is started twice."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        self.progress.runs += 1
        workflow.continue_as_new(self.input.model_copy(update={"state": self.state}))

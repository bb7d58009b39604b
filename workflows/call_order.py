"""CallOrderWorkflow: one call order, from `initializing` to `completed`, over as many attempts as it takes.

The story of an order: resolve who calls and in which timezones the recipient lives; wait for an
allowed calling window; take a permit of its concurrency key; dial; hold the conversation; try again
later if no human was reached; analyze the conversation; return the final Call. Signals cancel,
pause, resume or force it to call now; queries show its live state. Scheduling maths lives in
`workflows.schedule`, never here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.exceptions import CancelledError as TemporalCancelled
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    # not `from workflows import schedule`: a submodule named in a fromlist is imported into the
    # sandbox again for every run, past the passthrough (a test counts the modules each run executes)
    import workflows.schedule as schedule
    import workflows.search_attributes as sa
    from activities.calls import INVALID_ORDER, CallActivities
    from activities.compliance import (
        DO_NOT_CONTACT,
        ComplianceActivities,
        ContactCheckRequest,
        RememberRequest,
    )
    from activities.notify import NotifyRequest, due_channels
    from activities.persistence import CallSnapshot, PersistenceActivities
    from activities.providers import DIAL_TOO_LATE
    from models import (
        DEFAULT_ASSISTANT_PROMPT,
        Assistant,
        Call,
        CallAssistant,
        CallAttempt,
        CallCampaign,
        CallCreateParams,
        CallRetryConfig,
        RetryConfigRecord,
        call_assistant_from,
    )
    from models.call import ORDER_WORKFLOW_PREFIX, is_call_id
    from models.common import TERMINAL_STATUSES, CallStatus, EndReason
    from models.concurrency import PermitDeferral, PermitGrant
    from models.workflow_io import (
        AnalysisResult,
        AnalyzeRequest,
        ConverseRequest,
        ConverseResult,
        DialRequest,
        HangUpRequest,
        PreparedOrder,
        PrepareRequest,
    )
    from workflows.concurrency import DEFER_SIGNAL, GRANT_SIGNAL, PermitHolder, organization_key
    from workflows.inputs import admitted_input, signal_argument
    from workflows.notify import CallNotificationsWorkflow, notifications_workflow_id

# Dial errors that no retry can fix; every other unanswered attempt is worth another try.
PERMANENT_DIAL_ERRORS = frozenset({"number_non_attributed", "no_international_permission"})
DEFAULT_ORGANIZATION = "org_local"
# Patch id: orders paused and resumed before it resumed at once, whatever their scheduled_at.
RESUME_KEEPS_SCHEDULED_AT = "resume-keeps-scheduled-at"
# Until prepare_order resolves it, the Call shows the order's inline assistant (as POST /call answered
# it); an order that errors before then has it too, so its call.errored webhook is sent.
INLINE_ASSISTANT_BEFORE_PREPARE = "inline-assistant-before-prepare"
# The force_now signal's "call now" is spent by the attempt it led to or that was under way: sent while
# queued or during a call, it no longer skips the retry delay after that attempt.
FORCE_NOW_SPENT_BY_THE_ATTEMPT = "force-now-spent-by-the-attempt"
# Temporal's cancellation, wherever it finds the order (checking the number, queueing for a permit),
# ends it `cancelled` like the cancel signal; before, it could end it `errored` or CANCELED unrecorded.
CANCELLATION_IN_EVERY_PHASE = "cancellation-in-every-phase"
# A dial or conversation whose retries are spent ends that attempt in error and the order tries again
# per its retry config; before, it ended the whole order `errored`.
PROVIDER_FAILURE_ENDS_THE_ATTEMPT = "provider-failure-ends-the-attempt"
# Pause and resume keep the time of the attempt they interrupted when it is still ahead (a retry
# delay is kept); before, a resumed order redialed at once.
RESUME_KEEPS_THE_NEXT_ATTEMPT_TIME = "resume-keeps-the-next-attempt-time"
# Once the calls are over (the analysis under way), the cancel signal has nothing left to cancel.
CANCEL_AFTER_THE_CALLS_CHANGES_NOTHING = "cancel-after-the-calls-changes-nothing"

# Temporal's cancellation that reaches an order while it closes (gives back its permit, writes its final
# state) lets it finish; before, the run ended CANCELED and a final write still queued never ran.
CLOSING_OUTLIVES_CANCELLATION = "closing-outlives-cancellation"
# A concurrency key is the organization's own: its semaphore is `concurrency-<organization id>:<key>`;
# before, every organization saying "trunk" shared one limit (and could set or exhaust another's).
CONCURRENCY_PER_ORGANIZATION = "concurrency-per-organization"
# An order whose workflow id is not `call-<call id>` (a lowercase UUID) fails at once; before, it rang
# and was stored under an id the API could never reach (an empty one, for the id `call-`).
CALL_ID_CHECKED = "call-id-checked"
# A memo's organization_id that is not a string fails the order; before, it was read as str(value): an
# organization nobody has, whose order the API could not reach.
MEMO_STRING_CHECKED = "memo-string-checked"
# An attempt whose time came while no worker ran the order (down, or behind a backlog) waits for the next
# window if its own closed meanwhile; before, it dialed whenever a worker came back, at 3 a.m. if need be.
WINDOW_CHECKED_ON_WAKING = "window-checked-on-waking"
# A number listed do-not-contact by another call while this order waited (for a retry after voicemail, or
# for its window) is checked again before each later attempt; before, the retry dialled it all the same.
CONTACT_CHECKED_BEFORE_EACH_ATTEMPT = "contact-checked-before-each-attempt"
# A cancelled dial or conversation is waited for until it has ended (the phone stopped ringing, the agent
# hung up) before the order gives its permit back; before, the next order on the key rang meanwhile.
CANCELLED_STEP_ENDS_BEFORE_ITS_PERMIT = "cancelled-step-ends-before-its-permit"
# That wait holds through Temporal's cancellation coming on top of the signal's, and a step that ended by
# timing out (its worker or voice agent gone) is hung up (`hang_up`) before the permit goes back.
CANCELLED_STEP_HUNG_UP = "cancelled-step-hung-up"
# Patch id: a permit waited for longer than CONTACT_RECHECK_AFTER dialed with no new look at the
# do-not-contact list (another call to the number may have put it there meanwhile).
CONTACT_CHECKED_AFTER_THE_PERMIT = "contact-checked-after-the-permit"
CONTACT_RECHECK_AFTER = timedelta(seconds=10)
# Patch id: an order by assistant_id to a number listed do-not-contact since it was accepted errored before
# its assistant was resolved: its Call had none, so no webhook said it errored. It is resolved first now.
RESOLVED_BEFORE_THE_CONTACT_CHECK = "resolved-before-the-contact-check"
HANG_UP_PATIENCE = timedelta(minutes=10)  # LiveKit down, or a rolling deploy's older workers meanwhile

# The order's first reads of the database: an outage (PostgreSQL restarting) is waited out, as by
# persist_call, not fatal after 5 tries in some 15 s; what the order itself gets wrong is final.
PREPARE_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=30), non_retryable_error_types=[INVALID_ORDER, DO_NOT_CONTACT]
)
PREPARE_PATIENCE = timedelta(hours=1)
# Providers are idempotent per attempt id, so a retried dial re-reads the first ring instead of ringing again.
DIAL_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["InvalidSimulation"])
# The dial heartbeats while it rings, so a worker that dies mid-ring is replaced within this time.
DIAL_HEARTBEAT = timedelta(seconds=10)
CONVERSE_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["InvalidSimulation"])
# An LLM endpoint that is down is waited out (status post_processing) for up to ANALYZE_PATIENCE; after
# that, or at once for a refused request, the order completes without an outcome.
ANALYZE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
ANALYZE_PATIENCE = timedelta(hours=1)
# Writes are idempotent and monotonic, so retrying one late never overwrites a newer state.
PERSIST_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


# The longest conversation the order lets the provider hold (the seed sets no maximum, and Temporal's
# and the telephony's durations have one).
LONGEST_CALL_SECS = 7 * 86400


def _call_limit(order: PreparedOrder) -> float | None:
    limit = order.assistant.max_call_duration_secs
    return min(float(limit), LONGEST_CALL_SECS) if limit else None


class OrderFailed(Exception):
    """The order cannot be carried out (bad assistant, bad simulation, ...): it ends `errored`."""


class DialedTooLate(Exception):
    """The dial started after its calling window closed and rang nobody: the order waits for the next."""


def admitted(order: RawValue) -> CallCreateParams:
    """The order as the API admits it. One started another way (the Temporal CLI or Web UI, a client of
    its own) with a body the API would refuse fails at once, non-retryable, naming the fields; decoded
    by the SDK instead, it would fail every workflow task, forever, and never say so to its sender."""
    return admitted_input(CallCreateParams, order, INVALID_ORDER)


def memo_of(name: str, type_hint: Any, default: Any) -> Any:
    """A memo value the order reads, held to its type: one of another shape (set by hand) fails the
    order at once, named, rather than every workflow task (or, for a string, passing as another)."""
    try:
        value = workflow.memo_value(name, default, type_hint=type_hint)
    except Exception as err:  # noqa: BLE001 — the converter's error, whatever the shape given
        reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else type(err).__name__
        raise ApplicationError(
            f"invalid memo {name}: {reason}", type=INVALID_ORDER, non_retryable=True
        ) from None
    if type_hint is str and not isinstance(value, str):
        if not workflow.patched(MEMO_STRING_CHECKED):  # an order started before: it read str(value)
            return str(value)
        raise ApplicationError(
            f"invalid memo {name}: a string expected", type=INVALID_ORDER, non_retryable=True
        )
    return value


@workflow.defn(name="CallOrderWorkflow")
class CallOrderWorkflow:
    @workflow.init
    def __init__(self, order: RawValue) -> None:
        # What the signals touch: they run before `run`, on an order refused too.
        self.status: CallStatus = "initializing"
        self.cancel_requested = False
        self.paused = False
        self.call_now = False  # one-shot: the force_now signal ends the current wait
        self.permits: PermitHolder | None = None
        self.refusal: ApplicationError | None = None
        try:
            self._admit(order)
        except ApplicationError as refusal:
            # An order the API would refuse fails in `run`: a workflow whose __init__ raised answers no
            # query at all (each waits out its deadline), not even the Web UI's stack trace.
            self.refusal = refusal

    def _admit(self, order: RawValue) -> None:
        """The order's parameters, id and memo, held to what the API admits; then its initial state."""
        self.params = params = admitted(order)
        workflow_id = workflow.info().workflow_id
        self.call_id = workflow_id.removeprefix(ORDER_WORKFLOW_PREFIX)
        named = workflow_id.startswith(ORDER_WORKFLOW_PREFIX) and is_call_id(self.call_id)
        if not named and workflow.patched(CALL_ID_CHECKED):  # (a valid id records no marker)
            raise ApplicationError(
                f"invalid workflow id {workflow_id!r}: a call order's is call-<call id>, a lowercase UUID",
                type=INVALID_ORDER,
                non_retryable=True,
            )
        self.organization_id: str = memo_of("organization_id", str, DEFAULT_ORGANIZATION)
        # A campaign's order: its campaign, and the campaign's call_retry_config (over the assistant's).
        self.campaign = memo_of("campaign", CallCampaign, None)
        self.retry_override = memo_of("call_retry_config", CallRetryConfig, None)
        self.order: PreparedOrder | None = None
        self.attempts: list[CallAttempt] = []  # oldest first; the Call shows them most recent first
        self.contact_checked_at = datetime.min.replace(tzinfo=UTC)  # do-not-contact, last asked
        self.outcome: str | None = None
        self.outcome_summary: str | None = None
        self.error: str | None = None
        # When the order was placed: the API's clock, which POST /call answered (memo), else now.
        placed_at: datetime | None = memo_of("created_at", datetime, None)
        self.created_at: datetime = placed_at or workflow.now()
        self.accepted = placed_at is not None  # the API (or a campaign) accepted it, and stored its row
        self.unprepared: CallAssistant | None = None  # the inline assistant until `order` is resolved
        self.updated_at = self.created_at
        self.next_attempt_at: datetime | None = None
        # the Call's scheduled_at, once known (`_started`): from the first moment, as POST /call answered
        self.starts_at: datetime | None = memo_of("scheduled_at", datetime, None)
        self._shows_next_attempt = False  # NextAttemptAt is set (search attribute)
        self.force_now = bool(params.force_now)
        self.asks_again_at: datetime | None = None  # the key's queue was full: when the order asks again
        self.permits = (
            PermitHolder(
                self._semaphore_key(params.concurrency.key),
                params.concurrency.max,
                workflow.info().workflow_id,
            )
            if params.concurrency
            else None
        )
        self._writes = 0  # sequence number of the last state write (persistence)
        self._pending_writes: list[workflow.ActivityHandle[bool]] = []
        self._resolution_stored = False  # a write holding the prepared assistant has completed
        self._transcripts_stored: set[str] = set()  # ended attempts a completed write held in full

    # -- the story ---------------------------------------------------------------------------------

    @workflow.run
    async def run(self, order: RawValue) -> Call:
        """The order: a `CallCreateParams` (`admitted` in `__init__`)."""
        if self.refusal:
            raise self.refusal
        params = self.params
        workflow.upsert_search_attributes(
            [sa.TO_PHONE_NUMBER.value_set(params.phone_number)]
            + ([sa.CONCURRENCY_KEY.value_set(params.concurrency.key)] if params.concurrency else [])
        )
        if params.assistant_id is None and workflow.patched(INLINE_ASSISTANT_BEFORE_PREPARE):
            self.unprepared = call_assistant_from(
                params.assistant or Assistant(prompt=DEFAULT_ASSISTANT_PROMPT),
                id=f"inline-{self.call_id}",
                organization_id=self.organization_id,
                now=self.created_at,
            )
        self._set_status("initializing")
        try:
            self.order = await self._prepare()
            await self._place_attempts(self.order)
            if not self.cancel_requested:
                await self._analyze(self.order)
        except asyncio.CancelledError:  # Temporal cancellation means the same as the cancel signal
            self.cancel_requested = True
        except ActivityError as err:  # ... also when it cancelled the activity the order awaited
            if not (_cancelled(err) and workflow.patched(CANCELLATION_IN_EVERY_PHASE)):
                raise
            self.cancel_requested = True
        except OrderFailed as failure:
            self.error = str(failure)
            self.outcome_summary = self.outcome_summary or self.error  # why, for the API and the webhook
            workflow.logger.warning("call order errored: %s", failure)
        return await self._beyond_cancellation(self._close())

    async def _close(self) -> Call:
        """The permit goes back, the final state is set, remembered and announced, and written."""
        self._close_open_attempt("participant_removed" if self.cancel_requested else None)
        await self._give_back_permit()
        self._set_status(self._final_status())
        final = self.call()
        await self._after_the_call(final)
        await self._flush_writes()
        return final

    async def _beyond_cancellation(self, closing: Coroutine[object, object, Call]) -> Call:
        """Temporal's cancellation that arrives while the order closes has nothing left to stop: the
        order finishes closing (its final writes are not cancelled) and returns its Call."""
        task = asyncio.ensure_future(closing)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not workflow.patched(CLOSING_OUTLIVES_CANCELLATION):
                    task.cancel()  # as before the patch: the closing steps are cancelled, then the run
                    await workflow.wait([task])
                    raise
                workflow.logger.info("cancellation ignored: the order is closing")

    async def _after_the_call(self, final: Call) -> None:
        """Remember a do_not_contact outcome, then hand notifications (webhook, email, SMS) to a child
        workflow that outlives the order, so a dead receiver never delays or fails it."""
        if final.outcome == "do_not_contact":
            try:
                await workflow.execute_activity_method(
                    ComplianceActivities.remember_do_not_contact,
                    RememberRequest(
                        organization_id=self.organization_id,
                        phone_number=final.to_phone_number,
                        call_id=self.call_id,
                        outcome=final.outcome,
                        outcome_summary=final.outcome_summary,
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    # as the order's own writes: a database outage is waited out, the request never lost
                    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
                    summary="remember: do not contact this number",
                )
            except ActivityError as err:
                workflow.logger.warning("do_not_contact not recorded: %s", _reason(err))
        if due_channels(final):
            try:
                await workflow.start_child_workflow(
                    CallNotificationsWorkflow.run,
                    NotifyRequest(call=final),
                    id=notifications_workflow_id(self.call_id),
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
            except WorkflowAlreadyStartedError:
                pass

    async def _prepare(self) -> PreparedOrder:
        request = PrepareRequest(
            call_id=self.call_id,
            organization_id=self.organization_id,
            to_phone_number=self.params.phone_number,
            assistant_id=self.params.assistant_id,
            assistant=self.params.assistant,
            from_phone_number=self.params.from_phone_number,
            call_retry_config=self.retry_override,
            created_at=self.created_at,
            accepted=self.accepted,
        )

        async def resolving() -> PreparedOrder:
            return await workflow.execute_activity_method(
                CallActivities.prepare_order,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=PREPARE_PATIENCE,
                retry_policy=PREPARE_RETRY,
                summary="resolve assistant, caller id and timezone",
            )

        try:
            if not workflow.patched(RESOLVED_BEFORE_THE_CONTACT_CHECK):
                await self._check_contact()
                return await resolving()
            self.order = await resolving()  # a refusal below is announced to the assistant's webhook
            await self._check_contact()
            return self.order
        except ActivityError as err:
            if _cancelled(err) and workflow.patched(CANCELLATION_IN_EVERY_PHASE):
                raise
            raise OrderFailed(_reason(err)) from err

    async def _check_contact(self) -> None:
        """DO_NOT_CONTACT (an ActivityError) when the number may not be called."""
        await workflow.execute_activity_method(
            ComplianceActivities.check_contact_allowed,
            ContactCheckRequest(
                organization_id=self.organization_id,
                phone_number=self.params.phone_number,
                metadata=self.params.metadata or {},
                placed_at=self.created_at,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=PREPARE_PATIENCE,
            retry_policy=PREPARE_RETRY,
            summary="check the number may be contacted",
        )

    async def _contact_still_allowed(self) -> bool:
        """True when the number was checked at this instant (by `_prepare`, for a first attempt at once).
        Else it is checked now (OrderFailed when listed meanwhile) and False: time has passed, so the
        caller looks again at a cancel, a pause or the window before it dials."""
        if workflow.now() <= self.contact_checked_at or not workflow.patched(
            CONTACT_CHECKED_BEFORE_EACH_ATTEMPT
        ):
            return True
        await self._look_up_contact()
        return False

    async def _look_up_contact(self) -> None:
        """The number looked up again: OrderFailed when it was put on the do-not-contact list meanwhile."""
        try:
            await self._check_contact()
        except ActivityError as err:
            if _cancelled(err):
                raise
            raise OrderFailed(_reason(err)) from err
        self.contact_checked_at = workflow.now()

    async def _place_attempts(self, order: PreparedOrder) -> None:
        self.contact_checked_at = workflow.now()  # by _prepare
        due = schedule.first_attempt_at(
            now=workflow.now(),
            scheduled_at=self.params.scheduled_at,
            config=order.retry,
            zones=order.zones,
            ignore_windows=self.force_now,
        )
        while True:
            if not await self._wait_until(due, order):
                return
            if not self.attempts:
                self._started()
            if not await self._take_permit(order):
                if self.cancel_requested:
                    return
                due = self._afresh(order)  # paused while queued, or the window closed meanwhile
                continue
            try:
                attempt = await self._run_attempt(order)
            except DialedTooLate as late:
                self.attempts.pop()  # it rang nobody: no attempt was made
                workflow.logger.warning("attempt not made: %s", late)
                due = self._afresh(order)
                continue
            finally:
                await self._give_back_permit()
            if workflow.patched(FORCE_NOW_SPENT_BY_THE_ATTEMPT):
                self.call_now = False  # a force_now sent while queued or calling: this attempt answered it
            if self.cancel_requested or not _deserves_retry(attempt):
                return
            due = schedule.next_attempt_at(
                attempt_number=len(self.attempts),
                ended_at=_as_datetime(attempt.ended_at),
                started_at=_as_datetime(attempt.started_at),
                config=order.retry,
                zones=order.zones,
                ignore_windows=self.force_now,
            )
            if due is None and len(self.attempts) >= order.retry.max_retry_attempts:
                return

    def _started(self) -> None:
        """The first attempt goes ahead: the Call's scheduled_at becomes now if force_now made it go
        sooner than planned, or for a campaign's row (created long before its launch); else it stays
        the instant waited for, or what POST /call answered for an order due at once."""
        if self.params.force_now and self.starts_at is None:  # at once, whatever its scheduled_at
            self.starts_at = self.created_at  # (as POST /call answered)
            return
        now = workflow.now()
        planned = self.starts_at or self.params.scheduled_at
        if (planned and planned > now) or (self.campaign and self.starts_at is None):
            self.starts_at = now

    async def _wait_until(self, due: datetime | None, order: PreparedOrder) -> bool:
        """Sleep until `due` (status `scheduled`), honouring pause/resume/force_now; False if cancelled."""
        while not self.cancel_requested:
            if self.paused:
                self._set_status("paused")
                await workflow.wait_condition(lambda: not self.paused or self.cancel_requested)
                due = self._afresh(order, kept=due)  # the attempt's time if still ahead, else afresh
                if not self.attempts and due is not None and due <= workflow.now():
                    self.starts_at = due  # resumed past its time: the order starts now, not then
                continue
            if self.call_now:
                if not await self._contact_still_allowed():
                    continue
                self.call_now = False
                return True
            if due is None:
                raise OrderFailed(f"no allowed calling window within reach for timezones {order.zones}")
            now = workflow.now()
            if due <= now:
                if not self._may_dial_on_waking(order):
                    due = self._afresh(order)
                    continue
                if await self._contact_still_allowed():
                    return True
                continue
            self.next_attempt_at = due
            if not self.attempts:  # the order's start: scheduled_at, moved into its window
                self.starts_at = due
            self._set_status("scheduled")
            number = len(self.attempts) + 1
            try:
                await workflow.wait_condition(
                    lambda: self.cancel_requested or self.paused or self.call_now,
                    timeout=due - now,
                    timeout_summary=f"attempt {number}/{order.retry.max_retry_attempts}: "
                    f"waiting for {schedule.describe_instant(due, order.zones[0])}",
                )
            except TimeoutError:
                continue  # its time has come: the window and the number are looked at above
        return False

    def _may_dial_on_waking(self, order: PreparedOrder) -> bool:
        """Whether an attempt whose time has come may dial now: its window may have closed while no
        worker ran the order (down, or behind a backlog), and then it waits for the next one."""
        if self.force_now or schedule.is_allowed(workflow.now(), order.retry, order.zones):
            return True
        return not workflow.patched(WINDOW_CHECKED_ON_WAKING)

    async def _take_permit(self, order: PreparedOrder) -> bool:
        """Queue for a permit of the order's concurrency key (status `queued_for_calling`).

        False when the order was cancelled or paused while queued, or when the permit came after the
        calling window closed: the permit goes back and the order reschedules.
        """
        if self.permits is None:
            return True
        permits, ticket = self.permits, f"attempt-{len(self.attempts) + 1}"
        self._set_status("queued_for_calling")
        try:
            await permits.request(ticket)
            while await self._turned_away(permits, ticket, order):
                await permits.request(ticket)  # the key's queue was full: its time to ask again has come
        except (asyncio.CancelledError, ActivityError) as err:  # a waiter that is cancelled leaves the queue
            await permits.release(ticket)
            if isinstance(err, ActivityError) and _refused(err):  # its key refused by Temporal
                raise OrderFailed(_reason(err)) from err
            raise
        if self._may_dial(ticket, order) and (
            not await self._contact_looked_up_after_the_wait() or self._may_dial(ticket, order)
        ):  # (the look-up takes time: a pause, a cancel or the window's end may have come meanwhile)
            return True
        await permits.release(ticket)
        return False

    def _may_dial(self, ticket: str, order: PreparedOrder) -> bool:
        """The permit is granted, and nothing since holds the order back: a cancel, a pause, the window."""
        window_open = self.force_now or schedule.is_allowed(workflow.now(), order.retry, order.zones)
        granted = self.permits is not None and self.permits.granted(ticket)
        return granted and not self.cancel_requested and not self.paused and window_open

    async def _contact_looked_up_after_the_wait(self) -> bool:
        """A long wait for a permit (a campaign's key): the number is looked up again before it is
        dialed (True), OrderFailed when another call put it on the do-not-contact list meanwhile (the
        order's closing gives the permit back)."""
        if workflow.now() - self.contact_checked_at <= CONTACT_RECHECK_AFTER:
            return False
        if not workflow.patched(CONTACT_CHECKED_AFTER_THE_PERMIT):
            return False
        await self._look_up_contact()
        return True

    async def _turned_away(self, permits: PermitHolder, ticket: str, order: PreparedOrder) -> bool:
        """Wait for the permit (or cancel, pause). True when the key's queue was full and the time to ask
        again has come: the order waits `retry_after` (status `queued_for_calling` all along); if its
        calling window closed meanwhile, it reschedules instead (False, with no permit)."""
        await workflow.wait_condition(
            lambda: (
                permits.granted(ticket) or permits.deferred(ticket) or self.cancel_requested or self.paused
            )
        )
        if not permits.deferred(ticket) or self.cancel_requested or self.paused:
            return False
        delay = permits.retry_after(ticket)
        self.asks_again_at = workflow.now() + delay
        workflow.set_current_details(self._details())
        try:
            await workflow.wait_condition(
                lambda: self.cancel_requested or self.paused,
                timeout=delay,
                timeout_summary=f"the queue of key {permits.key!r} is full: ask again",
            )
            return False  # cancelled or paused meanwhile
        except TimeoutError:
            return self.force_now or schedule.is_allowed(workflow.now(), order.retry, order.zones)
        finally:
            self.asks_again_at = None
            workflow.set_current_details(self._details())

    async def _give_back_permit(self) -> None:
        """Permits are held only while an attempt dials, rings or talks (idempotent)."""
        if self.permits:
            for ticket in self.permits.held_tickets:
                await self.permits.release(ticket)

    async def _run_attempt(self, order: PreparedOrder) -> CallAttempt:
        """One attempt: dial, converse, hang up. It exists (and has started_at) from the moment it dials."""
        number = len(self.attempts) + 1
        attempt = CallAttempt(
            id=str(workflow.uuid4()),
            phone_number=self.params.phone_number,
            status="ringing",
            started_at=workflow.now(),
        )
        self.attempts.append(attempt)
        self.next_attempt_at = None
        self._set_status("calling")
        label = f"attempt {number}/{order.retry.max_retry_attempts}"
        metadata = self.params.metadata or {}
        waits = workflow.patched(CANCELLED_STEP_ENDS_BEFORE_ITS_PERMIT)  # a cancelled step, for its end
        cancellation = (
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            if waits
            else ActivityCancellationType.TRY_CANCEL
        )

        dial = await self._until_cancelled(
            attempt,
            workflow.start_activity_method(
                CallActivities.dial,
                DialRequest(
                    call_id=self.call_id,
                    attempt_id=attempt.id,
                    attempt_number=number,
                    to_phone_number=self.params.phone_number,
                    from_phone_number=order.from_phone_number,
                    max_call_duration_secs=_call_limit(order),
                    metadata=metadata,
                    organization_id=self.organization_id,
                    accepted_trunk_id=order.livekit_outbound_trunk_id,
                    ring_by=None
                    if self.force_now
                    else schedule.window_closes_at(workflow.now(), order.retry, order.zones),
                ),
                start_to_close_timeout=timedelta(seconds=120),
                heartbeat_timeout=DIAL_HEARTBEAT,
                retry_policy=DIAL_RETRY,
                cancellation_type=cancellation,
                summary=f"{label}: dial {self.params.phone_number}",
            ),
            HangUpRequest(attempt_id=attempt.id) if waits else None,
        )
        if dial is None:
            return attempt  # cancelled while ringing (closed by run()), or the dial failed
        if not dial.answered:
            self._end_attempt(attempt, status="error", dial_error=dial.dial_error)
            return attempt

        attempt.answered_at = dial.answered_at or workflow.now()  # the call's own time when known
        attempt.status = "ongoing"
        attempt.handled_by_ai = True  # the agent talks to whoever answered
        self._touch()
        talk = await self._until_cancelled(
            attempt,
            workflow.start_activity_method(
                CallActivities.converse,
                ConverseRequest(
                    call_id=self.call_id,
                    attempt_id=attempt.id,
                    attempt_number=number,
                    session=dial.session,
                    to_phone_number=self.params.phone_number,
                    from_phone_number=order.from_phone_number,
                    assistant=order.assistant,
                    prompt_variables=self.params.prompt_variables or {},
                    metadata=metadata,
                ),
                start_to_close_timeout=timedelta(seconds=(_call_limit(order) or 3600) + 120),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=CONVERSE_RETRY,
                cancellation_type=cancellation,
                summary=f"{label}: conversation",
            ),
            HangUpRequest(attempt_id=attempt.id, session=dial.session) if waits else None,
        )
        if talk is None:
            return attempt
        attempt.answered_at = talk.answered_at or attempt.answered_at
        if talk.hold_seconds > 0:  # a simulated call lasts on the workflow's clock
            try:
                await workflow.wait_condition(
                    lambda: self.cancel_requested,
                    timeout=talk.hold_seconds,
                    timeout_summary=f"{label}: simulated call in progress ({talk.hold_seconds:g} s)",
                )
                return attempt  # cancelled mid-call: the agent says goodbye; run() closes the attempt
            except TimeoutError:
                pass
            finally:  # over, however it ended (Temporal's cancellation raises here)
                self._heard(attempt, talk)
        else:
            self._heard(attempt, talk)
        self._end_attempt(
            attempt,
            status="completed",
            ended_by=talk.ended_by,
            end_reason=talk.end_reason,
            ended_at=talk.ended_at,
        )
        return attempt

    @staticmethod
    def _heard(attempt: CallAttempt, talk: ConverseResult) -> None:
        """What the conversation gave, once it is over: a simulated one returns it all at once and then
        lasts, and its Call shows it as a real one does, at the end (the stored row then has it too)."""
        attempt.result = talk.result
        attempt.transcript = talk.transcript
        attempt.recording_url = talk.recording_url

    def _heard_until_cancelled(self, attempt: CallAttempt, step: workflow.ActivityHandle) -> None:  # type: ignore[type-arg]
        """A conversation the order cancelled: what was said until then, which the voice agent reports
        with the cancellation once it has said goodbye (nothing, when it does not: an older agent)."""
        if attempt.status != "ongoing" or not step.done() or step.cancelled():
            return
        error = step.exception()
        if not (_cancelled(error) and error.cause.details):  # type: ignore[union-attr]
            return
        try:
            talk = ConverseResult.model_validate(error.cause.details[0])  # type: ignore[union-attr]
        except ValidationError:
            return
        self._heard(attempt, talk)

    async def _analyze(self, order: PreparedOrder) -> None:
        """Turn the last conversation with a human into structured output and an outcome."""
        last = self.attempts[-1] if self.attempts else None
        if last is None or last.result != "human" or not last.transcript:
            return
        self._set_status("post_processing")
        try:
            analysis = await workflow.execute_activity_method(
                CallActivities.analyze,
                AnalyzeRequest(
                    call_id=self.call_id,
                    attempt_id=last.id,
                    assistant=order.assistant,
                    transcript=last.transcript,
                    to_phone_number=self.params.phone_number,
                    from_phone_number=order.from_phone_number,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=ANALYZE_PATIENCE,
                retry_policy=ANALYZE_RETRY,
                summary="analyze the conversation",
            )
        except ActivityError as err:  # analysis never keeps an order from completing
            cancelled = _cancelled(err)
            self.outcome_summary = "analysis cancelled" if cancelled else f"analysis failed: {_reason(err)}"
            answered = None if cancelled else _answered_before_failing(err)
            if answered is None:
                return
            analysis = answered  # what one request answered while the other kept failing
        last.structured_output = analysis.structured_output
        self.outcome = analysis.outcome
        self.outcome_summary = analysis.outcome_summary
        if self.outcome:
            workflow.upsert_search_attributes([sa.OUTCOME.value_set(self.outcome)])
        self._touch()

    # -- signals and queries -------------------------------------------------------------------------

    @workflow.signal
    def cancel(self) -> None:
        """Stop calling: a waiting order ends at once, a call in progress ends gracefully."""
        if self.status == "post_processing" and workflow.patched(CANCEL_AFTER_THE_CALLS_CHANGES_NOTHING):
            workflow.logger.info("cancel ignored: the calls are over, the analysis is under way")
            return
        self.cancel_requested = True

    @workflow.signal
    def force_now(self) -> None:
        """Call now: skip the current wait, scheduled_at and the calling windows from here on."""
        self.force_now = True
        self.call_now = True
        self.paused = False

    @workflow.signal(name=GRANT_SIGNAL)
    def concurrency_granted(self, *args: Any) -> None:  # one PermitGrant (`signal_argument`)
        grant = signal_argument(PermitGrant, args, GRANT_SIGNAL)
        if self.permits and grant:
            self.permits.on_grant(grant)

    @workflow.signal(name=DEFER_SIGNAL)
    def concurrency_deferred(self, *args: Any) -> None:  # one PermitDeferral
        deferral = signal_argument(PermitDeferral, args, DEFER_SIGNAL)
        if self.permits and deferral:
            self.permits.on_deferral(deferral)

    @workflow.signal
    def pause(self) -> None:
        self.paused = True

    @workflow.signal
    def resume(self) -> None:
        self.paused = False

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """A signal the order does not take (`force-now`, `Pause`): its sender was told it succeeded, so
        the worker's log says it changed nothing."""
        workflow.logger.warning(
            "signal %r ignored: a call order takes cancel, pause, resume and force_now", name
        )

    @workflow.query
    def status(self) -> str:
        self._answerable()
        return self.status

    @workflow.query
    def attempts(self) -> list[CallAttempt]:
        self._answerable()
        return list(reversed(self.attempts))

    @workflow.query(name="call")
    def call(self) -> Call:
        self._answerable()
        order = self.order
        assistant = order.assistant if order else self.unprepared
        retry = order.retry if order else self.retry_override
        return Call(
            id=self.call_id,
            assistant=assistant,
            call_attempts=list(reversed(self.attempts)),
            call_retry_config=RetryConfigRecord.model_validate(retry.model_dump())
            if retry
            else (assistant.call_retry_config if assistant else None),  # the unprepared inline assistant's
            calls_count=len(self.attempts),
            campaign=self.campaign,
            created_at=self.created_at,
            direction="outbound",
            first_sentence_delay_ms=assistant.first_sentence_delay_ms if assistant else 400,
            from_phone_number=order.from_phone_number if order else self._requested_caller_id(),
            is_cancelled=self.status == "cancelled",
            is_completed=self.status == "completed",
            last_call_attempt=self.attempts[-1] if self.attempts else None,
            llm_model=assistant.llm_model if assistant else {"name": "gpt-4.1", "type": "dedicated-instance"},
            metadata=self.params.metadata,
            organization_id=self.organization_id,
            prompt_variables=self.params.prompt_variables,
            scheduled_at=self.starts_at or self.params.scheduled_at or self.created_at,
            status=self.status,
            to_phone_number=self.params.phone_number,
            updated_at=self.updated_at,
            outcome=self.outcome,
            outcome_summary=self.outcome_summary,
        )

    def _answerable(self) -> None:
        """A query on an order refused has nothing to tell but why: it fails with the refusal."""
        if self.refusal:
            raise self.refusal

    def _requested_caller_id(self) -> str:
        inline = self.params.assistant
        return self.params.from_phone_number or (inline.from_phone_number if inline else None) or ""

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _semaphore_key(self, key: str) -> str:
        """The key of this order's semaphore: the organization's own (orders placed before the patch
        keep the semaphore they queued on)."""
        if workflow.patched(CONCURRENCY_PER_ORGANIZATION):
            return organization_key(self.organization_id, key)
        return key

    async def _until_cancelled(
        self,
        attempt: CallAttempt,
        handle: workflow.ActivityHandle,  # type: ignore[type-arg]
        ending: HangUpRequest | None,
    ):  # type: ignore[no-untyped-def]
        """Await one step of `attempt` (dial, conversation) unless the order is cancelled first: then
        cancel it (and, given its `ending`, wait for its end) and return None. A step whose retries are
        spent ends the attempt in error (None too), so the order tries again later; one refused for good
        (bad configuration) ends the order; a dial that started after its window closed is no attempt
        (DialedTooLate)."""
        try:
            await workflow.wait_condition(lambda: handle.done() or self.cancel_requested)
        except asyncio.CancelledError:
            try:
                await self._abandon(handle, ending)
            finally:
                self._heard_until_cancelled(attempt, handle)
            raise
        if not handle.done():
            await self._abandon(handle, ending)
            self._heard_until_cancelled(attempt, handle)
            return None
        try:
            return handle.result()
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and err.cause.type == DIAL_TOO_LATE:
                raise DialedTooLate(_reason(err)) from err
            if _refused(err) or not workflow.patched(PROVIDER_FAILURE_ENDS_THE_ATTEMPT):
                raise OrderFailed(_reason(err)) from err
            step = "dial" if attempt.status == "ringing" else "conversation"
            workflow.logger.warning("attempt %s: %s failed: %s", attempt.id, step, _reason(err))
            self._end_attempt(  # why, in the log: the client has no end_reason for a failed step
                attempt,
                status="error",
                ended_by="system",
                **({"dial_error": "non_classified_error"} if step == "dial" else {}),
            )
            return None

    def _afresh(self, order: PreparedOrder, kept: datetime | None = None) -> datetime | None:
        """The next attempt's time from now (after resume, or a permit or dial that came too late): `kept`,
        the time the order was waiting for, while it is still ahead (resuming never skips a retry
        delay); an order that has not dialed yet still waits for its scheduled_at."""
        now, scheduled_at = workflow.now(), self.params.scheduled_at
        if kept is not None and kept > now and workflow.patched(RESUME_KEEPS_THE_NEXT_ATTEMPT_TIME):
            return kept
        keep = (
            not self.attempts
            and scheduled_at is not None
            and scheduled_at > now
            and workflow.patched(RESUME_KEEPS_SCHEDULED_AT)
        )
        return schedule.first_attempt_at(
            now=now,
            scheduled_at=scheduled_at if keep else None,
            config=order.retry,
            zones=order.zones,
            ignore_windows=self.force_now,
        )

    def _end_attempt(
        self, attempt: CallAttempt, *, status: str, ended_at: datetime | None = None, **fields: object
    ) -> None:
        for name, value in fields.items():
            setattr(attempt, name, value)
        attempt.handled_by_human = attempt.transferred
        attempt.status = status  # type: ignore[assignment]
        attempt.ended_at = ended_at or workflow.now()  # the call's own end time when the provider knows it
        self._touch()

    def _close_open_attempt(self, reason: EndReason | None) -> None:
        """An attempt interrupted by cancellation ends gracefully and stays on the record."""
        if self.attempts and self.attempts[-1].status in ("queued", "ringing", "ongoing"):
            attempt = self.attempts[-1]
            answered = attempt.status == "ongoing"
            self._end_attempt(
                attempt, status="completed" if answered else "error", ended_by="system", end_reason=reason
            )

    def _final_status(self) -> CallStatus:
        if self.cancel_requested:
            return "cancelled"
        if self.error or (self.attempts and self.attempts[-1].dial_error in PERMANENT_DIAL_ERRORS):
            return "errored"
        return "completed"

    def _set_status(self, status: CallStatus) -> None:
        self.status = status
        self._touch()
        attributes = [sa.CALL_STATUS.value_set(status), sa.ATTEMPT_COUNT.value_set(len(self.attempts))]
        if status == "scheduled" and self.next_attempt_at:
            attributes.append(sa.NEXT_ATTEMPT_AT.value_set(self.next_attempt_at))
            self._shows_next_attempt = True
        elif self._shows_next_attempt:  # paused, queued, calling or over: no attempt waits for a time
            attributes.append(sa.NEXT_ATTEMPT_AT.value_unset())
            self._shows_next_attempt = False
        workflow.upsert_search_attributes(attributes)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        """The order in a sentence, for the Web UI's current details (markdown; no command, nothing
        in history)."""
        done, order = len(self.attempts), self.order
        of = f"/{order.retry.max_retry_attempts}" if order else ""
        match self.status:
            case "scheduled" if order and self.next_attempt_at:
                when = schedule.describe_instant(self.next_attempt_at, order.zones[0])
                return f"**scheduled**: attempt {done + 1}{of} at {when}"
            case "queued_for_calling" if self.params.concurrency and order and self.asks_again_at:
                key, when = (
                    self.params.concurrency.key,
                    schedule.describe_instant(self.asks_again_at, order.zones[0]),
                )
                return (
                    f"**queued_for_calling**: attempt {done + 1}{of}: the queue of key `{key}` is full; "
                    f"asks again at {when}"
                )
            case "queued_for_calling" if self.params.concurrency:
                key = self.params.concurrency.key
                return f"**queued_for_calling**: attempt {done + 1}{of} waits for a permit of key `{key}`"
            case "calling":
                return f"**calling** {self.params.phone_number}: attempt {done}{of}"
            case "paused":
                return "**paused**: waiting for `resume` (or `cancel`)"
            case "post_processing":
                return "**post_processing**: analyzing the conversation"
            case "completed":
                outcome = f"outcome `{self.outcome}`" if self.outcome else "no outcome"
                return f"**completed** after {done} attempt{'s' * (done != 1)}: {outcome}"
            case "cancelled":
                return f"**cancelled** after {done} attempt{'s' * (done != 1)}"
            case "errored":
                dial_error = self.attempts[-1].dial_error if self.attempts else None
                return f"**errored**: {self.error or f'the number cannot be called ({dial_error})'}"
        return f"**{self.status}**"

    def _touch(self) -> None:
        self.updated_at = workflow.now()
        self._persist()

    def _persist(self) -> None:
        """Write the current state to the database (search, export and history outlive the workflow).

        Fire-and-forget so no state change waits on the database; `run` awaits the writes before it
        returns, so a closed order's stored state is its final one. Once a write holding the prepared
        assistant has completed, the row keeps it and later writes leave it out (`keep_resolution`
        puts it back): a long prompt is not repeated in history at every state change. So are the
        transcripts of ended attempts (`kept_transcripts`; `keep_transcripts`), but in the final write:
        each write held every earlier one, and 50 attempts of 10 KB (voicemail, IVR menus) took the
        history past Temporal's 50 MB, which terminated the order at attempt 46."""
        self._writes += 1
        call = self.call().model_copy(deep=True)
        if self._resolution_stored:
            call.assistant = None
        kept: list[str] = []
        if call.status not in TERMINAL_STATUSES:
            for attempt in call.call_attempts:
                if attempt.id in self._transcripts_stored:
                    attempt.transcript = None
                    kept.append(attempt.id)
        ended = {attempt.id for attempt in call.call_attempts if attempt.ended_at and attempt.id not in kept}
        write = workflow.start_activity_method(
            PersistenceActivities.persist_call,
            CallSnapshot(call=call, seq=self._writes, kept_transcripts=kept),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=PERSIST_RETRY,
            summary=f"persist: {self.status}",
        )
        if self.order is not None and call.assistant is not None:
            write.add_done_callback(self._on_resolution_written)
        if ended:
            write.add_done_callback(lambda done: self._on_transcripts_written(done, ended))
        self._pending_writes.append(write)

    async def _abandon(self, handle: workflow.ActivityHandle, ending: HangUpRequest | None) -> None:  # type: ignore[type-arg]
        """Cancel a step the order no longer waits for. Given its `ending` (it was started with
        `WAIT_CANCELLATION_COMPLETED`), wait until it has ended, through a second cancellation too, and
        hang up if it ended by timing out (its worker or voice agent gone, nobody hung up): the permit is
        given back only then. Its outcome is expected, so it is marked as seen; otherwise asyncio logs it
        at ERROR as "exception was never retrieved" once collected."""
        handle.cancel()
        handle.add_done_callback(lambda step: step.cancelled() or step.exception())
        if ending is None:
            return
        if not workflow.patched(CANCELLED_STEP_HUNG_UP):  # an order that cancelled a step before it
            await workflow.wait([handle])
            return
        cancelled = await _until_done(handle)
        if not handle.cancelled() and _timed_out(handle.exception()):
            cancelled = await self._hang_up(ending) or cancelled
        if cancelled:
            raise asyncio.CancelledError

    async def _hang_up(self, ending: HangUpRequest) -> bool:
        """Hang up a cancelled step's call that nobody hung up (its worker or voice agent gone), retried
        for HANG_UP_PATIENCE through Temporal's cancellation too: True when that came meanwhile."""
        hanging_up = workflow.start_activity_method(
            CallActivities.hang_up,
            ending,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=HANG_UP_PATIENCE,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary="hang up: the cancelled step's worker or voice agent is gone",
        )
        cancelled = await _until_done(hanging_up)
        if (why := hanging_up.exception()) is not None:  # what could be done was: the order ends all the same
            reason = _reason(why) if isinstance(why, ActivityError) else str(why)
            workflow.logger.warning("attempt %s: hang-up failed: %s", ending.attempt_id, reason)
        return cancelled

    def _on_transcripts_written(self, write: workflow.ActivityHandle[bool], attempts: set[str]) -> None:
        """Stored (or overtaken by a newer write, which held them too): the row has these transcripts."""
        if not write.cancelled() and write.exception() is None:
            self._transcripts_stored |= attempts

    def _on_resolution_written(self, write: workflow.ActivityHandle[bool]) -> None:
        """Stored (or overtaken by a newer write, which held it too): the row has the assistant."""
        if not write.cancelled() and write.exception() is None:
            self._resolution_stored = True

    async def _flush_writes(self) -> None:
        """Wait for the pending writes; one that kept failing for an hour is given up (Temporal still
        holds the state, until the namespace's retention)."""
        results = await asyncio.gather(*self._pending_writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                workflow.logger.warning("call order state not persisted: %s", result)


async def _until_done(step: workflow.ActivityHandle) -> bool:  # type: ignore[type-arg]
    """Wait for `step` to end, through Temporal's cancellation of the order (which `workflow.wait`
    does not pass on to it); True when that cancellation came meanwhile, for the caller to raise."""
    cancelled = False
    while not step.done():
        try:
            await workflow.wait([step])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _timed_out(err: BaseException | None) -> bool:
    return isinstance(err, ActivityError) and isinstance(err.cause, TemporalTimeout)


def _deserves_retry(attempt: CallAttempt) -> bool:
    """Retry unless a human was reached or the number can never be reached."""
    return attempt.result != "human" and attempt.dial_error not in PERMANENT_DIAL_ERRORS


def _answered_before_failing(err: ActivityError) -> AnalysisResult | None:
    """What the analysis's last try had answered (the outcome, or the data extracted) when its other
    request failed: its failure holds it (`activities.analysis`), as the cause of a timeout too."""
    failure = err.cause
    while failure is not None:
        if isinstance(failure, ApplicationError) and failure.details:
            try:
                return AnalysisResult.model_validate(failure.details[0])
            except ValidationError:
                return None
        failure = failure.__cause__
    return None


def _cancelled(err: BaseException | None) -> bool:
    """Temporal's cancellation reaches an awaited activity as that activity's cancelled error."""
    return isinstance(err, ActivityError) and isinstance(err.cause, TemporalCancelled)


def _refused(err: ActivityError) -> bool:
    """Refused for good (bad configuration or simulation), not merely failing for now."""
    return isinstance(err.cause, ApplicationError) and err.cause.non_retryable


def _reason(err: ActivityError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)


def _as_datetime(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value

"""Call orders: `POST /call` starts a CallOrderWorkflow, cancel, pause and resume steer it, and a read
comes live from the workflow while it runs and from the database after (search, export and phone
history read the database only: `api/call_records.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.compliance import ContactCheckRequest, is_overridden, refuse_listed
from activities.persistence import (
    CallerId,
    UnknownCallerId,
    assistant_view,
    call_columns,
    caller_ids,
    do_not_contact_entry,
    find_assistant,
    keep_resolution,
    resolve_caller_id,
)
from activities.start_refusals import too_large
from api import store
from api.assistants import refuse_too_large
from api.auth import Authenticated
from api.closed_orders import record_closed
from api.context import ApiContext, Context
from api.errors import ERRORS, ApiError, errors, not_found, unprocessable
from api.schemas import (
    CallCreateBody,
    CallResponse,
    Success,
)
from api.server_timing import ServerTiming
from api.unicode import UnicodeRoute
from models import (
    DEFAULT_ASSISTANT_PROMPT,
    Assistant,
    Call,
    CallAssistant,
    CallCreateParams,
    CallRetryConfig,
    RetryConfigRecord,
    call_assistant_from,
)
from models.call import carried_too_much, order_workflow_id
from models.common import TERMINAL_STATUSES
from models.settings import Settings
from models.tables import AssistantRecord, CallOrderRecord, Database, utcnow
from workflows import schedule

log = logging.getLogger(__name__)
T = TypeVar("T")
router = APIRouter(route_class=UnicodeRoute, tags=["calls"])

WORKFLOW_TYPE = "CallOrderWorkflow"


def _canonical_id(call_id: str) -> str:
    """Call ids are UUIDs; anything else names no call (404, not 422: it is a path, not input)."""
    try:
        return str(uuid.UUID(call_id))
    except ValueError:
        raise not_found("call", call_id) from None


async def _owned_call(context: ApiContext, organization_id: str, call_id: str) -> CallOrderRecord:
    canonical = _canonical_id(call_id)
    # Another organization's row is not found at once: asked of its workflow first, that 404 took twice
    # as long as one for no call, telling that a live call has this id.
    record = await context.db(store.find_call, context.database, canonical)
    if record is None:
        record = await _started_without_row(context, organization_id, canonical)
    if record is None or record.organization_id != organization_id:
        raise not_found("call", call_id)
    return record


async def _started_without_row(
    context: ApiContext, organization_id: str, call_id: str
) -> CallOrderRecord | None:
    """An order running before its row is written (its database locked or slow: `POST /call` answers
    without its placeholder, and its workflow writes the row once it can), read from its workflow: the
    call just accepted was a 404 to GET and to cancel meanwhile."""
    try:
        client = await context.temporal()
        live = await context.live.call(client.get_workflow_handle(order_workflow_id(call_id)))
    except Exception:  # noqa: BLE001 — no such workflow, or Temporal cannot say: not found
        return None
    if live is None or live.organization_id != organization_id:
        return None
    return CallOrderRecord(id=call_id, **call_columns(live, 0))


# --- placing an order ------------------------------------------------------------------------------------


# What an order without an assistant or a retry config gets, built once: shared, so read only.
DEFAULT_ASSISTANT = Assistant(prompt=DEFAULT_ASSISTANT_PROMPT)
DEFAULT_RETRY = CallRetryConfig()


@dataclass(frozen=True)
class Resolution:
    """An order's assistant, caller id and retry config, as `prepare_order` will resolve them."""

    assistant: Assistant  # inline, stored (`record`) or the default
    record: AssistantRecord | None
    caller: CallerId
    retry: CallRetryConfig
    starts_at: datetime  # the Call's scheduled_at, moved into the recipient's calling window

    def view(self, call_id: str, organization_id: str, now: datetime) -> CallAssistant:
        """The assistant as the answer shows it (built after the checks: no check needs it)."""
        if self.record is not None:
            return assistant_view(self.record, self.assistant)
        return call_assistant_from(
            self.assistant, id=f"inline-{call_id}", organization_id=organization_id, now=now
        )


def resolve_order(
    database: Database, settings: Settings, organization_id: str, params: CallCreateParams, now: datetime
) -> Resolution:
    """What `prepare_order` will resolve, checked before the workflow starts so that an unknown
    assistant_id or a caller id the organization does not own is a 422, not an errored order."""
    record = None
    if params.assistant_id is not None:
        record = find_assistant(database, organization_id, params.assistant_id)
        if record is None:
            raise unprocessable("assistant_id", f"assistant {params.assistant_id} not found")
        assistant = Assistant.model_validate(record.config)
    else:
        assistant = params.assistant or DEFAULT_ASSISTANT
    try:
        caller = resolve_caller_id(
            caller_ids(database, organization_id),
            params.from_phone_number or assistant.from_phone_number,
            settings.default_from_phone_number,
        )
    except UnknownCallerId as err:
        field = (  # where it was said: the request, the stored assistant it names, its own assistant
            "from_phone_number"
            if params.from_phone_number
            else "assistant_id"
            if record
            else "assistant.from_phone_number"
        )
        raise unprocessable(field, str(err)) from None
    refuse_far_future("scheduled_at", params.scheduled_at, now)
    retry = (assistant.call_retry_config or DEFAULT_RETRY).applied()
    if not params.force_now:
        # where the timezone would be set: the stored assistant's config, else the request's assistant
        where = "assistant_id" if record is not None else "assistant.call_retry_config.timezone"
        refuse_no_common_window(params.phone_number, retry, now, where)
    return Resolution(assistant, record, caller, retry, planned_start(params, retry, now))


def planned_start(params: CallCreateParams, retry: CallRetryConfig, now: datetime) -> datetime:
    """The Call's scheduled_at, as its workflow computes it once prepared: its first attempt's instant,
    moved into the recipient's calling window (an order placed at 01:00 in Tokyo starts at 10:00 there);
    as asked when that is now or past; now with force_now."""
    if params.force_now:
        return now
    zones = schedule.resolve_timezones(params.phone_number, retry.timezone)
    due = schedule.first_attempt_at(
        now=now, scheduled_at=params.scheduled_at, config=retry, zones=zones, ignore_windows=False
    )
    return due if due is not None and due > now else params.scheduled_at or now


SCHEDULING_HORIZON = timedelta(days=36525)


def refuse_far_future(field: str, value: datetime | None, now: datetime) -> None:
    """A start more than a century ahead is a 422: a longer timer overflows the server's durations
    (Go's, about 292 years) long before datetime's year 9999, and is never what was meant."""
    if value is not None and value - now > SCHEDULING_HORIZON:
        raise unprocessable(field, f"{value.isoformat()} is more than 100 years ahead")


def refuse_no_common_window(phone_number: str, retry: CallRetryConfig, now: datetime, field: str) -> None:
    """A number that may be in zones sharing no calling window could never be called: a 422 asking for
    the timezone, not an order that errs later."""
    if zones := schedule.zones_sharing_no_window(phone_number, retry, now):
        whose = "the assistant's " if field == "assistant_id" else ""
        raise unprocessable(
            field,
            f"{phone_number} may be in {len(zones)} timezones ({zones[0]} … {zones[-1]}) that share no "
            f"calling window; set {whose}call_retry_config.timezone to the recipient's",
        )


def initial_call(
    call_id: str,
    organization_id: str,
    params: CallCreateParams,
    assistant: CallAssistant,
    caller: CallerId,
    retry: CallRetryConfig,
    now: datetime,
    starts_at: datetime,
) -> Call:
    """The Call as `POST /call` answers it, before the workflow's first state arrives."""
    return Call(
        id=call_id,
        assistant=assistant,
        call_attempts=[],
        call_retry_config=RetryConfigRecord.model_validate(retry.model_dump()),
        calls_count=0,
        created_at=now,
        direction="outbound",
        first_sentence_delay_ms=assistant.first_sentence_delay_ms,
        from_phone_number=caller.phone_number,
        llm_model=assistant.llm_model,
        metadata=params.metadata,
        organization_id=organization_id,
        prompt_variables=params.prompt_variables,
        scheduled_at=starts_at,
        status="initializing",
        to_phone_number=params.phone_number,
        updated_at=now,
    )


def request_hash(params: CallCreateParams) -> str:
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Patience:
    """How long a start waits for Temporal (stalled, or unreachable while the SDK retries), and then how
    long the ask whether it took it all the same (`started_after_all`): a start neither answers is
    answered as one Temporal cannot account for (`StartUnknown`: a 503, the order kept)."""

    start: timedelta = timedelta(seconds=10)
    ask: timedelta = timedelta(seconds=2)
    # The database's part, before the start (a stalled one held the request past the client's timeout:
    # each retry another order once it came back) and after it (a locked SQLite held the answer 30 s).
    database: timedelta = timedelta(seconds=3)

    @property
    def total(self) -> float:
        return (self.start + self.ask + self.database).total_seconds()


PATIENCE = Patience()


def patience_for(request: Request) -> Patience:
    """Within the client's read timeout when it says it (the official client sends
    `x-stainless-read-timeout`), a second to spare (a third of a shorter one): answered before its own
    timeout would have it retry, a second order."""
    try:
        said = float(request.headers.get("x-stainless-read-timeout", "inf"))
    except ValueError:
        return PATIENCE
    if not math.isfinite(said) or said <= 0:
        return PATIENCE
    budget = said - min(1.0, said / 3)
    if budget >= PATIENCE.total:
        return PATIENCE
    return Patience(
        start=timedelta(seconds=budget * 0.5),
        ask=timedelta(seconds=budget * 0.3),
        database=timedelta(seconds=budget * 0.2),
    )


async def in_time(work: Awaitable[T], patience: Patience) -> T:
    """A database step before the start, within its patience: else a 503 with nothing placed (the
    request still waiting on it is left to finish or fail alone)."""
    try:
        async with asyncio.timeout(patience.database.total_seconds()):
            return await work
    except TimeoutError:
        raise ApiError(
            503,
            "unavailable",
            f"the database did not answer within {patience.database.total_seconds():g} s; nothing was placed",
        ) from None


async def _start(
    context: ApiContext,
    call_id: str,
    organization_id: str,
    params: CallCreateParams,
    created_at: datetime | str | None = None,
    start_signal: str | None = None,
    patience: Patience = PATIENCE,
    scheduled_at: datetime | str | None = None,
) -> bool:
    """Start the order's workflow (with `start_signal`: signal-with-start); already started (a retried
    request) counts as started, and so does a start that failed but reached Temporal
    (`started_after_all`). False only when it was already there and, given a signal, had ended.

    REJECT_DUPLICATE: a replayed request for an order that already ended must not start it again."""
    client: Client = await context.temporal()
    try:
        async with asyncio.timeout(patience.start.total_seconds()):  # the SDK retries past rpc_timeout
            await client.start_workflow(
                WORKFLOW_TYPE,
                params,
                id=order_workflow_id(call_id),
                task_queue=context.settings.task_queue,
                # created_at, scheduled_at: the order reads what this answer said (not the worker's later)
                memo={"organization_id": organization_id}
                | ({"created_at": created_at} if created_at else {})
                | ({"scheduled_at": scheduled_at} if scheduled_at else {}),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"call {params.phone_number}",
                start_signal=start_signal,
                rpc_timeout=patience.start,  # each try's: an unreachable server is retried for ~10 s
            )
    except TimeoutError:  # slow, or unreachable (restarting): the SDK's retries may yet land the start
        # (that the order's workflow is there proves a plain start landed, not that a signal went with it)
        if start_signal is None and await started_after_all(client, call_id, patience.ask):
            log.warning("call %s: its start was answered late, but Temporal has it: started", call_id)
            return True
        raise StartUnknown(  # even if not found yet: never a 503 a client retries into a second order
            call_id, "could not start the call order: Temporal did not answer in time"
        ) from None
    except WorkflowAlreadyStartedError:
        return start_signal is None
    except RPCError as err:
        if too_large(err):  # retrying cannot help, unlike a 503
            raise ApiError(413, "request_too_large", f"the call order is too large: {err.message}") from err
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(422, "validation_error", f"the call order was refused: {err.message}") from err
        # (that the order's workflow is there proves a plain start landed, not that a signal went with it)
        started = await started_after_all(client, call_id, patience.ask) if start_signal is None else None
        if started:
            log.warning("call %s: its start failed (%s) but Temporal has it: started", call_id, err.message)
            return True
        message = f"could not start the call order: {err.message}"
        if started is None:
            raise StartUnknown(call_id, f"{message}; Temporal could not say if it started") from err
        raise ApiError(503, "unavailable", message) from err
    return True


class StartUnknown(ApiError):
    """A start that failed where Temporal could not say whether it took it. The order may yet run, so
    a retry could place it twice, and the client is told not to (the official one would): the order is
    kept instead, to be steered as any call (a cancel, or a resume that places it if it never started).
    A keyed order's retry with the same Idempotency-Key is this order, so it stays retryable."""

    def __init__(self, call_id: str, reason: str) -> None:
        advice = (
            f"call {call_id} may yet run: cancel it, or resume it to place it, rather than order it again"
        )
        super().__init__(503, "unavailable", f"{reason}; {advice}", retryable=False)
        self.reason = reason

    def as_retryable(self) -> ApiError:
        """The same failure where the retry is this order (its key's, or a signal's), so safe."""
        return ApiError(503, "unavailable", f"{self.reason}: retry it, it is this order, not a second one")


async def started_after_all(client: Client, call_id: str, patience: timedelta = PATIENCE.ask) -> bool | None:
    """Whether a start that failed (timed out, its connection lost) reached Temporal all the same, only
    its answer lost; None when Temporal cannot say (it is down). Its workflow id is this order's alone, so
    if the workflow is there, the order is started: answering 503 would have the client retry (the
    official one does) and place it twice. One quick ask, not retried."""
    request = DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=order_workflow_id(call_id))
    )
    try:
        async with asyncio.timeout(patience.total_seconds()):  # the SDK retries past its timeout
            await client.workflow_service.describe_workflow_execution(request, timeout=patience)
    except TimeoutError:
        return None
    except RPCError as err:
        return False if err.status == RPCStatusCode.NOT_FOUND else None
    return True


async def _replay(context: ApiContext, record: CallOrderRecord, digest: str) -> JSONResponse:
    """A retried `POST /call` with the same Idempotency-Key: the same call, never a second one."""
    if record.request_hash != digest:
        raise ApiError(409, "conflict", "this Idempotency-Key was already used with a different request body")
    await start_unstarted(context, record)  # the first request may have died before starting it
    return JSONResponse({"call": (await current_call(context, record)).model_dump(mode="json")})


IDEMPOTENCY_KEY_MAX_LENGTH = 255
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying a POST with the same key returns the same call instead of a second one.",
    "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
}


def idempotency_key_of(request: Request) -> str | None:
    """The request's Idempotency-Key header, read here rather than declared as a FastAPI `Header`
    parameter (documented by `openapi_extra` instead): solving that parameter cost `POST /call` about
    0.1 ms on an in-memory dev server (`benchmarks/paired.py`). Too long a key is the same 422."""
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", "Idempotency-Key"),
                    "msg": f"String should have at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
                    "input": key,
                    "ctx": {"max_length": IDEMPOTENCY_KEY_MAX_LENGTH},
                }
            ]
        )
    return key


@router.post(
    "/call",
    response_model=CallResponse,
    responses=errors(409),
    summary="Place a call",
    openapi_extra={"parameters": [_IDEMPOTENCY_KEY_PARAMETER]},
)
async def create_call(params: CallCreateBody, request: Request, principal: Authenticated) -> JSONResponse:
    """Start a call order (a CallOrderWorkflow) and answer at once with its Call (`initializing`)."""
    context: ApiContext = request.app.state.context  # not `Context`: one dependency less on the hot path
    patience = patience_for(request)
    idempotency_key = idempotency_key_of(request)
    organization_id = principal.organization_id
    if params.assistant is not None:  # measured as its steps carry it (2 µs for a usual one)
        refuse_too_large(params.assistant)
    if (params.prompt_variables or params.metadata) and (why := carried_too_much(params)):
        raise ApiError(413, "request_too_large", f"the call order is too large: {why}")
    digest = request_hash(params) if idempotency_key else ""  # only a keyed request is ever replayed
    if idempotency_key:
        existing = await in_time(
            context.place(store.get_call_by_key, context.database, organization_id, idempotency_key), patience
        )
        if existing is not None:
            return await _replay(context, existing, digest)
    call_id = str(uuid.uuid4())

    def admit() -> tuple[datetime, Resolution]:
        """What may refuse the order (a 422), resolved: reads only, well under a millisecond."""
        _refuse_do_not_contact(context.database, organization_id, params)
        now = utcnow()  # one instant: the order's created_at, and its inline assistant's
        return now, resolve_order(context.database, context.settings, organization_id, params, now)

    timing = ServerTiming()
    with timing.phase("checks"):
        now, resolution = await in_time(context.read(admit), patience)

    def placeholder() -> dict[str, Any]:
        """The order's row until its workflow writes it, holding the Call this request answers."""
        assistant = resolution.view(call_id, organization_id, now)
        call = initial_call(
            call_id,
            organization_id,
            params,
            assistant,
            resolution.caller,
            resolution.retry,
            now,
            resolution.starts_at,
        )
        return {
            "id": call_id,
            **call_columns(call, 0),
            "params": params.model_dump(mode="json") if idempotency_key else None,  # to start a replay
            "idempotency_key": idempotency_key,
            "request_hash": digest or None,
        }

    moved = resolution.starts_at if resolution.starts_at != (params.scheduled_at or now) else None
    if idempotency_key:  # the key is claimed by the placeholder row before anything starts
        with timing.phase("claim"):
            row = placeholder()
            # (not bounded: a claim given up on would land later all the same, an order said not placed;
            # a retry with the key is this order, whenever it lands)
            winner = await context.place(store.insert_call, context.database, row)
        if winner is not None:  # a concurrent request with the same key won
            return await _replay(context, winner, digest)
        try:
            with timing.phase("start"):
                await _start(
                    context,
                    call_id,
                    organization_id,
                    params,
                    now,
                    patience=patience,
                    scheduled_at=moved,
                )
        except StartUnknown as unknown:  # the claim stays: a retry with this key replays it
            raise unknown.as_retryable() from unknown
        except Exception:
            await context.db(store.delete_placeholder, context.database, call_id)
            raise
        answer = _answer(row)
    else:  # nothing to claim: the placeholder is built and written while the workflow starts
        with timing.phase("start"):
            answer = await _start_with_placeholder(
                context,
                call_id,
                organization_id,
                params,
                now,
                placeholder,
                timing,
                patience,
                moved,
            )
    answer.headers.update(timing.header())
    return answer


def _answer(row: dict[str, Any]) -> JSONResponse:
    """`POST /call`'s answer: the Call as stored in its placeholder row (dumped once)."""
    return JSONResponse({"call": row["call"]})


async def _start_with_placeholder(
    context: ApiContext,
    call_id: str,
    organization_id: str,
    params: CallCreateParams,
    created_at: datetime,
    placeholder: Callable[[], dict[str, Any]],
    timing: ServerTiming,
    patience: Patience,
    scheduled_at: datetime | None,
) -> JSONResponse:
    """Start the workflow; while Temporal works, build the placeholder row, write it and render the
    answer. Only what may refuse the order runs before the start: the rest costs little latency (the
    `start_workflow` phase times the start alone: that work beside it slows it by about a tenth).

    A started order whose placeholder could not be written is still answered: the workflow stores the
    order itself at its first step. An order that could not start leaves no row behind; one that Temporal
    cannot say started is kept, with what starts it (`StartUnknown`)."""
    starting = _start(
        context, call_id, organization_id, params, created_at, patience=patience, scheduled_at=scheduled_at
    )
    start = asyncio.ensure_future(timing.timed("start_workflow", starting))
    await asyncio.sleep(0)  # the start's request is on the wire
    try:
        row = placeholder()
        answer = _answer(row)
    except Exception:
        await _withdraw(context, call_id, start)
        raise
    storing = asyncio.ensure_future(context.place(store.insert_call, context.database, row))
    [started] = await asyncio.gather(start, return_exceptions=True)
    if not isinstance(started, BaseException) and not storing.done():  # within the client's patience
        await asyncio.wait([storing], timeout=patience.database.total_seconds())
        if not storing.done():  # answered all the same: the workflow writes the row at its first step
            log.warning(
                "call %s started; its placeholder row is not written yet (the database is slow)", call_id
            )
            storing.add_done_callback(lambda late: late.cancelled() or late.exception())  # seen, if it fails
            return answer
    [stored] = await asyncio.gather(storing, return_exceptions=True)
    if isinstance(started, BaseException):
        if not isinstance(stored, BaseException):  # its row: kept if the order may yet run, else forgotten
            try:
                if isinstance(started, StartUnknown):
                    await context.db(
                        store.keep_unstarted, context.database, call_id, params.model_dump(mode="json")
                    )
                    log.warning("call %s kept, initializing: %s", call_id, started.reason)
                else:
                    await context.db(store.delete_placeholder, context.database, call_id)
            except Exception as err:  # noqa: BLE001 — the database failed too: the start's failure answers
                log.warning("call %s: its row could not be settled after a failed start (%s)", call_id, err)
        raise started
    if isinstance(stored, BaseException):
        log.warning("call %s started; its placeholder row was not written (%s)", call_id, stored)
    return answer


async def _withdraw(context: ApiContext, call_id: str, start: asyncio.Future[None]) -> None:
    """Terminate an order this request started but cannot answer (its Call failed to build: a bug), so
    that a failed `POST /call` places no call, as when everything ran before the start."""
    with contextlib.suppress(Exception):  # not started, or already gone: nothing to withdraw
        await start
        client = await context.temporal()
        handle = client.get_workflow_handle(order_workflow_id(call_id))
        await handle.terminate(reason="POST /call failed before answering; the order was withdrawn")


def _refuse_do_not_contact(database: Database, organization_id: str, params: CallCreateParams) -> None:
    """A number that asked not to be called again is refused before any order exists (422 naming
    phone_number); the workflow checks again for orders started without the API."""
    if is_overridden(params.metadata):
        return
    entry = do_not_contact_entry(database, organization_id, params.phone_number)
    if entry is None:  # the common case builds nothing more
        return
    request = ContactCheckRequest(
        organization_id=organization_id, phone_number=params.phone_number, metadata=params.metadata
    )
    try:
        refuse_listed(entry, request)
    except ApplicationError as err:
        raise unprocessable("phone_number", err.message.removeprefix("phone_number ")) from None


# --- reading and steering one order -------------------------------------------------------------------------


async def current_call(context: ApiContext, record: CallOrderRecord) -> Call:
    """Live from the workflow's `call` query while the order runs, else (or if the query cannot be
    answered: no worker, Temporal down) the stored state; closed from Temporal's close event when its
    workflow closed without ending it (terminated by hand: `closed_orders`)."""
    if record.status not in TERMINAL_STATUSES:
        try:
            client = await context.temporal()
            handle = client.get_workflow_handle(order_workflow_id(record.id))
            try:
                live = await context.live.call(handle)
            except WorkflowQueryRejectedError:  # closed: by someone else (closed here), or by itself
                closed = await record_closed(client, context.database, context.settings.task_queue, record)
                if closed is not None:
                    return closed
                # it ended the order itself, its row not yet written (or its last write given up):
                live = await handle.query("call", result_type=Call, rpc_timeout=context.live.timeout)
            if live is None:  # not asked, nobody answers queries now: the row just read is the freshest
                return Call.model_validate(record.call)
            if live.organization_id == record.organization_id:
                return keep_resolution(live, record.call)
        except Exception as err:  # noqa: BLE001 — any failure falls back to the database
            log.debug("live query of call %s failed, answering from the database: %s", record.id, err)
        fresher = await context.db(store.get_call, context.database, record.organization_id, record.id)
        record = fresher or record
    return Call.model_validate(record.call)


@router.get("/call/{id}", response_model=CallResponse, responses=ERRORS, summary="Get a call")
async def retrieve_call(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    record = await _owned_call(context, principal.organization_id, id)
    return JSONResponse({"call": (await current_call(context, record)).model_dump(mode="json")})


_SIGNALLED = {"cancel": "cancelled", "pause": "paused", "resume": "resumed", "force_now": "called now"}


def signal_refused(call_id: str, status: str, signal: str) -> str | None:
    """Why an order in `status` takes no `signal` (the workflow would ignore it): said rather than
    answered as a success, by the API (409) and the CLI (exit 2) alike."""
    if status in TERMINAL_STATUSES:
        return f"call {call_id} is {status}; it can no longer be {_SIGNALLED[signal]}"
    if signal != "resume" and status == "post_processing":
        return f"call {call_id} is post_processing: its calls are over, nothing to {signal.replace('_', ' ')}"
    if status == "not_launched":  # a campaign's row: no order exists yet to take a signal
        return (
            f"call {call_id} is not_launched: its campaign has not started it, so it cannot be "
            f"{_SIGNALLED[signal]}; steer the campaign instead (pause, cancel, or a launch without this row)"
        )
    return None


async def _signal(context: ApiContext, organization_id: str, call_id: str, signal: str) -> JSONResponse:
    record = await _owned_call(context, organization_id, call_id)
    verb = _SIGNALLED[signal]
    # The live status: an order that has ended but not yet written it (closing) is over all the same.
    if record.status not in TERMINAL_STATUSES:
        status = (await current_call(context, record)).status
    else:
        status = await _running_again(context, record) or record.status
    if refused := signal_refused(record.id, status, signal):
        raise ApiError(409, "conflict", refused)
    client = await context.temporal()
    try:
        await client.get_workflow_handle(order_workflow_id(record.id)).signal(signal)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise ApiError(503, "unavailable", f"could not signal the call order: {err.message}") from err
        if not await start_unstarted(context, record, signal):
            raise ApiError(
                409, "conflict", f"call {record.id} has ended; it can no longer be {verb}"
            ) from err
    return JSONResponse(Success().model_dump())


RUNNING_AGAIN = "running"  # the status of an order running again that nobody can tell now: not refused
DESCRIBE_PATIENCE = timedelta(seconds=2)


async def _running_again(context: ApiContext, record: CallOrderRecord) -> str | None:
    """The live status of an order whose row says it ended while its workflow runs: reset in Temporal
    after it was cancelled or terminated, it may call again, and its row is behind until its new run
    writes (a refused cancel left the user no way to stop it). None when it does not run, or Temporal
    cannot say within DESCRIBE_PATIENCE (a refusal stays quick while it is down)."""
    try:
        handle = (await context.temporal()).get_workflow_handle(order_workflow_id(record.id))
        live = await context.live.call(handle)  # closed: refused at once
        if live is not None:
            return live.status if live.organization_id == record.organization_id else None
        # nobody answers queries now (a worker restarting): whether it runs, Temporal says without one
        async with asyncio.timeout(DESCRIBE_PATIENCE.total_seconds()):
            described = await handle.describe(rpc_timeout=DESCRIBE_PATIENCE)
    except (ApiError, RPCError, TimeoutError, WorkflowQueryRejectedError, WorkflowQueryFailedError):
        return None
    return RUNNING_AGAIN if described.status == WorkflowExecutionStatus.RUNNING else None


async def start_unstarted(context: ApiContext, record: CallOrderRecord, signal: str | None = None) -> bool:
    """Start an order whose workflow may never have started, from its row (its `POST /call` died, or
    failed with Temporal down): for a retry with its key, or with a signal (signal-with-start), so that a
    cancel ends it before any attempt, a pause holds it, a resume places it. False when its row is not
    such an order's, or, given a signal, it has ended."""
    if record.seq != 0 or record.params is None:  # a workflow wrote it, or nothing to start it from
        return False
    params = CallCreateParams.model_validate(record.params)
    stored = record.call or {}
    created_at, scheduled_at = stored.get("created_at"), stored.get("scheduled_at")
    try:
        return await _start(
            context, record.id, record.organization_id, params, created_at, signal, scheduled_at=scheduled_at
        )
    except StartUnknown as unknown:
        raise unknown.as_retryable() from unknown


@router.post("/call/{id}/cancel", response_model=Success, responses=errors(409), summary="Cancel a call")
async def cancel_call(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Cancel a scheduled or running order; a call in progress ends gracefully."""
    return await _signal(context, principal.organization_id, id, "cancel")


@router.post("/call/{id}/pause", response_model=Success, responses=errors(409), summary="Pause a call")
async def pause_call(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Hold the order before its next attempt; an attempt in progress finishes."""
    return await _signal(context, principal.organization_id, id, "pause")


@router.post("/call/{id}/resume", response_model=Success, responses=errors(409), summary="Resume a call")
async def resume_call(id: str, context: Context, principal: Authenticated) -> JSONResponse:
    """Resume a paused order; its next attempt is scheduled afresh."""
    return await _signal(context, principal.organization_id, id, "resume")


# --- many orders ------------------------------------------------------------------------------------------

"""Orders whose workflow closed without ending them: terminated by hand (the Web UI's Terminate,
`temporal workflow terminate`), failed or timed out. No workflow code runs then, so the stored Call still
said it waited while Temporal took no more signals for it (a cancel answered 409, "has ended"). Its Call
is closed from Temporal's close event instead: `cancelled` when terminated, else `errored`, written once
and announced as an order's end is (its webhook, e-mail, Slack)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistoryEventFilterType
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.notify import NotifyRequest, due_channels
from activities.persistence import write_call
from models import Call
from models.call import ORDER_WORKFLOW_PREFIX, order_workflow_id
from models.common import TERMINAL_STATUSES, CallStatus
from models.tables import CallOrderRecord, Database
from workflows.notify import notifications_workflow_id

# The closes that leave an order open (`closed_call` reads which from the event), as visibility names them.
UNENDED_CLOSES = ("Terminated", "Failed", "TimedOut")
_OPEN_ATTEMPT = ("queued", "ringing", "ongoing")
LOOK_BACK = timedelta(days=1)  # how far back a sweep looks for such closes
SWEEP_LIMIT = 20_000


def closed_call(call: Call, event: HistoryEvent) -> Call | None:
    """`call` as its workflow's close `event` left it, or None when that close ended it normally
    (completed, cancelled through Temporal, continued as new: the workflow wrote its own end)."""
    at = event.event_time.ToDatetime(tzinfo=UTC)
    if event.HasField("workflow_execution_terminated_event_attributes"):
        reason = event.workflow_execution_terminated_event_attributes.reason
        status: CallStatus = "cancelled"
        summary = f"terminated in Temporal: {reason}" if reason else "terminated in Temporal"
    elif event.HasField("workflow_execution_failed_event_attributes"):
        status = "errored"
        summary = f"failed in Temporal: {event.workflow_execution_failed_event_attributes.failure.message}"
    elif event.HasField("workflow_execution_timed_out_event_attributes"):
        status, summary = "errored", "timed out in Temporal"
    else:
        return None
    attempts = [
        a.model_copy(update={"status": "error", "ended_at": at}) if a.status in _OPEN_ATTEMPT else a
        for a in call.call_attempts
    ]
    closed = {"status": status, "outcome_summary": summary, "updated_at": at, "call_attempts": attempts}
    return call.model_copy(update=closed).with_derived_fields()


async def close_event(client: Client, call_id: str) -> HistoryEvent | None:
    """The close event of the order's workflow (its latest run), None while it runs."""
    handle = client.get_workflow_handle(order_workflow_id(call_id))
    filter_type = WorkflowHistoryEventFilterType.CLOSE_EVENT
    async for event in handle.fetch_history_events(event_filter_type=filter_type):
        return event
    return None


async def record_closed(
    client: Client, database: Database, task_queue: str, record: CallOrderRecord
) -> Call | None:
    """The Call of `record` closed from its workflow's close event, written and announced; None when
    the row has ended, or its workflow runs or ended the order itself."""
    if record.status in TERMINAL_STATUSES or record.call is None:
        return None
    event = await close_event(client, record.id)
    if event is None or (call := closed_call(Call.model_validate(record.call), event)) is None:
        return None
    if due_channels(call):  # announced first: a start that fails leaves the row open, to try again
        try:  # as the order would have: the same id, so never twice
            await client.start_workflow(
                "CallNotificationsWorkflow",
                NotifyRequest(call=call),
                id=notifications_workflow_id(call.id),
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass
    await asyncio.to_thread(write_call, database, call, record.seq + 1)
    return call


async def sweep_closed(client: Client, database: Database, task_queue: str, now: datetime) -> list[str]:
    """Close the Calls of the orders whose workflow closed without ending them in the last LOOK_BACK
    (found through Temporal's visibility, whoever closed them, read or not); the ids closed."""
    since = (now - LOOK_BACK).isoformat()
    abnormal = " OR ".join(f"ExecutionStatus = '{status}'" for status in UNENDED_CLOSES)
    query = f"WorkflowType = 'CallOrderWorkflow' AND ({abnormal}) AND CloseTime > '{since}'"
    closed: list[str] = []
    async for execution in client.list_workflows(query, limit=SWEEP_LIMIT):
        call_id = execution.id.removeprefix(ORDER_WORKFLOW_PREFIX)
        record = await asyncio.to_thread(_stored, database, call_id)
        if record is not None and await record_closed(client, database, task_queue, record) is not None:
            closed.append(call_id)
    return closed


def _stored(database: Database, call_id: str) -> CallOrderRecord | None:
    with database.session() as session:
        return session.get(CallOrderRecord, call_id)

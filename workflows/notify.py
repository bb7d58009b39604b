"""CallNotificationsWorkflow: the notifications of one ended order, on their own clock.

CallOrderWorkflow starts it as a child with ParentClosePolicy.ABANDON once the final status is known,
then returns at once: a webhook receiver that is down for hours keeps only this workflow open, never
the order. Each channel has its own retry policy (webhooks retry with backoff for a day); a channel
that finally fails is reported here and changes nothing on the order.

Workflow id: `notify-<call id>` (one per order; starting it twice fails with "already started", which
the order may ignore: delivery is already under way).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.analysis import ANALYSIS_REJECTED
    from activities.notify import (
        EMAIL_REJECTED,
        UNSAFE_URL,
        WEBHOOK_GONE,
        WEBHOOK_NOT_CONFIGURED,
        Channel,
        NotifyActivities,
        NotifyRequest,
        NotifyResult,
        SlackRequest,
        due_deliveries,
    )
    from activities.slack import SLACK_NOT_CONFIGURED, SLACK_REJECTED
    from activities.sms import SMS_REJECTED
    from workflows.inputs import admitted_input


@dataclass(frozen=True)
class ChannelOptions:
    """How long a channel keeps trying: `schedule_to_close` bounds all its retries together."""

    start_to_close: timedelta
    schedule_to_close: timedelta
    retry: RetryPolicy


WEBHOOK_OPTIONS = ChannelOptions(
    start_to_close=timedelta(seconds=30),
    schedule_to_close=timedelta(hours=24),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=10),
        backoff_coefficient=2,
        maximum_interval=timedelta(hours=1),
        non_retryable_error_types=[UNSAFE_URL, WEBHOOK_GONE, WEBHOOK_NOT_CONFIGURED],
    ),
)
EMAIL_OPTIONS = ChannelOptions(
    start_to_close=timedelta(seconds=60),
    schedule_to_close=timedelta(hours=6),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=30),
        backoff_coefficient=2,
        maximum_interval=timedelta(minutes=30),
        non_retryable_error_types=[EMAIL_REJECTED],
    ),
)
SLACK_OPTIONS = ChannelOptions(
    start_to_close=timedelta(seconds=30),
    schedule_to_close=timedelta(hours=6),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=10),
        backoff_coefficient=2,
        maximum_interval=timedelta(minutes=30),
        non_retryable_error_types=[SLACK_REJECTED, SLACK_NOT_CONFIGURED],
    ),
)
# A text that arrives hours after the call is worse than none: SMS give up after two hours.
SMS_OPTIONS = ChannelOptions(
    start_to_close=timedelta(seconds=90),  # includes writing the text with the LLM
    schedule_to_close=timedelta(hours=2),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=10),
        backoff_coefficient=2,
        maximum_interval=timedelta(minutes=10),
        non_retryable_error_types=[SMS_REJECTED, ANALYSIS_REJECTED, UNSAFE_URL],
    ),
)

CHANNELS = {
    "webhook": (NotifyActivities.deliver_webhook, WEBHOOK_OPTIONS),
    "email": (NotifyActivities.send_outcome_email, EMAIL_OPTIONS),
    "slack": (NotifyActivities.post_to_slack, SLACK_OPTIONS),
    "after_call_sms": (NotifyActivities.send_after_call_sms, SMS_OPTIONS),
    "voicemail_sms": (NotifyActivities.send_voicemail_sms, SMS_OPTIONS),
}


# Every delivery's request holds the whole Call, and one workflow task's commands travel in one message
# of at most 4 MB: deliveries are scheduled in batches (at most 8, and what fits in 3 MB), each batch
# after a timer, so in a task of its own. Before, a large Call (a big assistant, many Slack channels)
# failed the workflow's first task for good, and nothing was delivered.
DELIVERIES_IN_BATCHES = "deliveries-in-batches"
DELIVERIES_PER_TASK = 8
TASK_MESSAGE_BUDGET = 3 * 1024 * 1024
BATCH_PAUSE = timedelta(milliseconds=1)


def _deliveries_per_task(request: NotifyRequest) -> int:
    """How many deliveries of this Call one workflow task may schedule."""
    size = len(request.call.model_dump_json().encode())  # bytes, as sent: UTF-8 text is not escaped
    fitting = TASK_MESSAGE_BUDGET // max(1, size)
    return max(1, min(DELIVERIES_PER_TASK, fitting))


class NotificationsReport(BaseModel):
    results: list[NotifyResult] = Field(default_factory=list)


def notifications_workflow_id(call_id: str) -> str:
    return f"notify-{call_id}"


@workflow.defn(name="CallNotificationsWorkflow")
class CallNotificationsWorkflow:
    @workflow.run
    async def run(self, input: RawValue) -> NotificationsReport:  # a NotifyRequest
        request = admitted_input(NotifyRequest, input)
        deliveries = due_deliveries(request.call)
        started: list[asyncio.Future[NotifyResult]] = []
        per_task = _deliveries_per_task(request)
        for index, (channel, each) in enumerate(deliveries):
            if index and index % per_task == 0 and workflow.patched(DELIVERIES_IN_BATCHES):
                await workflow.sleep(BATCH_PAUSE)  # the next batch: scheduled by a workflow task of its own
            started.append(asyncio.ensure_future(self._deliver(channel, each)))
        results = await asyncio.gather(*started)
        return NotificationsReport(results=list(results))

    async def _deliver(self, channel: Channel, request: NotifyRequest) -> NotifyResult:
        method, options = CHANNELS[channel]
        try:
            return await workflow.execute_activity_method(
                method,
                request,
                start_to_close_timeout=options.start_to_close,
                schedule_to_close_timeout=options.schedule_to_close,
                retry_policy=options.retry,
                summary=f"{channel.replace('_', ' ')} for call {request.call.id}"
                + (f" to {request.slack_channel}" if isinstance(request, SlackRequest) else ""),
            )
        except ActivityError as err:
            cause = err.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            workflow.logger.warning("%s failed for good: %s", channel, reason)
            return NotifyResult(channel=channel, status="failed", detail=reason)

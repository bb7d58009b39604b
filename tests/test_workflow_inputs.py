"""Inputs, memos and signals sent past the API (the Temporal CLI or Web UI, a client of one's own): a
malformed one fails its workflow at once, typed and non-retryable, or, for a signal, is dropped and
logged; never a workflow task failing for ever (a semaphore stuck that way held every order of its key)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from activities.concurrency import ACQUIRE_SIGNAL, organization_key, semaphore_workflow_id
from models import Call
from tests.helpers import eventually, settings_for_tests
from tests.test_call_order import order
from workers import create_worker
from workflows.call_order import CallOrderWorkflow
from workflows.concurrency import GRANT_SIGNAL, HOLDERS_QUERY, WAITERS_QUERY


async def failure_of(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The workflow's failure, once it failed at once (a task failing for ever would never end)."""
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    async for event in handle.fetch_history_events():
        assert event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    return cause


@pytest.mark.parametrize(
    ("workflow_type", "workflow_id", "value", "named"),
    [
        ("ConcurrencySemaphoreWorkflow", "concurrency-org:k", {"key": "org:k", "max": 0}, "max"),
        ("ConcurrencySemaphoreWorkflow", "concurrency-org:k", None, "input"),
        ("ConcurrencySemaphoreWorkflow", "concurrency-org:k", {"key": "k", "max": 1}, "not this semaphore's"),
        (
            "ConcurrencySemaphoreWorkflow",
            "concurrency-org:k",
            {"key": "org:k", "max": 1, "packed_state": "AAAA"},
            "state",
        ),
        ("CampaignWorkflow", "campaign-c", {}, "campaign_id"),
        ("CallNotificationsWorkflow", "notify-c", {"call": 5}, "call"),
    ],
)
async def test_a_malformed_input_fails_its_workflow_at_once(
    time_env, task_queue, workflow_type: str, workflow_id: str, value: Any, named: str
) -> None:
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            workflow_type, value, id=workflow_id, task_queue=task_queue
        )
        cause = await failure_of(handle)
    assert cause.type == "InvalidWorkflowInput" and named in cause.message


@pytest.mark.parametrize(
    ("memo", "named"),
    [
        ({"organization_id": {"a": 1}}, "organization_id"),  # was stored under "{'a': 1}": out of reach
        ({"campaign": "abc"}, "campaign"),
        ({"created_at": "not a date"}, "created_at"),
        ({"call_retry_config": {"max_retry_attempts": "three"}}, "call_retry_config"),
    ],
)
async def test_a_malformed_memo_fails_the_order_at_once_naming_it(
    time_env, task_queue, memo: dict[str, Any], named: str
) -> None:
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            CallOrderWorkflow.run, order("human"), id=f"call-{uuid.uuid4()}", task_queue=task_queue, memo=memo
        )
        cause = await failure_of(handle)
    assert cause.type == "InvalidCallOrder" and f"memo {named}" in cause.message


async def test_signals_with_the_wrong_arguments_are_dropped_and_the_key_keeps_working(
    time_env, task_queue
) -> None:
    """A grant signal with no argument to an order, an acquire with none or two to its key's semaphore:
    each is dropped; the order still gets its permit, calls, and gives the permit back."""
    params = order(
        "human", metadata={"simulation.call_seconds": "60"}, concurrency={"key": "trunk", "max": 1}
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
        )
        await handle.signal(GRANT_SIGNAL)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "calling")
        semaphore = time_env.client.get_workflow_handle(
            semaphore_workflow_id(organization_key("org_local", "trunk"))
        )
        await semaphore.signal(ACQUIRE_SIGNAL)
        await semaphore.signal(ACQUIRE_SIGNAL, args=[{}, {}])
        call: Call = await asyncio.wait_for(handle.result(), 30)
        assert (await semaphore.query(HOLDERS_QUERY), await semaphore.query(WAITERS_QUERY)) == ([], [])
    assert (call.status, call.calls_count) == ("completed", 1)
    for workflow in (handle, semaphore):
        async for event in workflow.fetch_history_events():
            assert event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED


async def test_a_signal_the_order_does_not_take_is_said_in_the_worker_log(
    time_env, task_queue, caplog: pytest.LogCaptureFixture
) -> None:
    """`temporal workflow signal --name force-now` (the CLI's spelling) succeeds for its sender and was
    dropped without a trace: the worker now says so, and the order goes on waiting."""
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            CallOrderWorkflow.run,
            order("human", scheduled_at=tomorrow.isoformat()),
            id=f"call-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
        await handle.signal("force-now")
        await eventually(lambda: asyncio.sleep(0, caplog.text), lambda text: "'force-now' ignored" in text)
        assert await handle.query(CallOrderWorkflow.status) == "scheduled"
        await handle.signal(CallOrderWorkflow.cancel)
        assert (await handle.result()).calls_count == 0


@pytest.mark.parametrize(
    "workflow_id", ["call-", "call-not-a-uuid", "call-88E44894-6EA3-458A-AA50-B8B144B11CDE", "order-1"]
)
async def test_an_order_whose_workflow_id_is_not_call_and_a_call_id_fails_at_once(
    time_env, task_queue, workflow_id: str
) -> None:
    """It rang and was stored under an id the API could never reach (the API's call ids are lowercase
    UUIDs): it now fails before anything, naming its id."""
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            CallOrderWorkflow.run, order("human"), id=workflow_id, task_queue=task_queue
        )
        cause = await failure_of(handle)
    assert cause.type == "InvalidCallOrder" and repr(workflow_id) in cause.message


@pytest.mark.parametrize("encoding", [b"binary/plain", b"foo/bar"])
async def test_an_order_in_an_encoding_it_cannot_be_read_in_fails_at_once(
    time_env, task_queue, encoding: bytes
) -> None:
    """Raw bytes (decoded as bytes, whatever the model), or an encoding no converter knows."""
    junk = RawValue(Payload(metadata={"encoding": encoding}, data=b"+33612345678"))
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            "CallOrderWorkflow", junk, id=f"call-{uuid.uuid4()}", task_queue=task_queue
        )
        cause = await failure_of(handle)
    assert cause.type == "InvalidCallOrder" and "invalid input" in cause.message


async def test_an_encrypted_order_waits_for_a_worker_with_the_key(time_env, task_queue) -> None:
    """A worker without the codec key the sender used (its OUTDIAL_CODEC_KEY not set yet) cannot read
    the order: its task fails and is retried, for a worker that has the key, not the order for good."""
    sealed = RawValue(Payload(metadata={"encoding": b"binary/encrypted"}, data=b"\x00sealed"))
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            "CallOrderWorkflow", sealed, id=f"call-{uuid.uuid4()}", task_queue=task_queue
        )

        async def task_failed() -> bool:
            events = [e.event_type async for e in handle.fetch_history_events()]
            return EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in events

        await eventually(task_failed, bool)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.terminate("test over")

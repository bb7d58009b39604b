"""The HTTP API driven by the official `revox` client (sync and async) over a real loopback socket,
against the real Temporal dev server with a worker: calls, assistants, phone numbers, voices, search,
export, phone history, errors, idempotency and organization scoping.

The whole module runs once on SQLite and, when OUTDIAL_TEST_POSTGRES_URL is set (CI sets it), once
more on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from unittest.mock import AsyncMock

import httpx
import pytest
import revox
from fastapi import FastAPI
from revox import AsyncRevox, Revox
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode, WorkflowService
from typer.testing import CliRunner

from activities import persistence
from activities.simulated import SimulatedAnalyzer
from api import calls, create_app, store
from api.app import MAX_BODY_BYTES
from api.auth import api_keys_of, ensure_phone_number, issue_api_key, revoke_api_key
from api.server import ApiServer
from api.server_timing import ServerTiming, parse_server_timing
from models import Call, CallCreateParams
from models.call import ORDER_WORKFLOW_PREFIX, order_workflow_id
from models.retry import MOST_ATTEMPTS
from models.settings import Settings
from models.tables import Database, DoNotContactRecord, utcnow
from models.workflow_io import AnalysisResult, AnalyzeRequest
from tests.helpers import eventually, free_ports, settings_for_tests
from workers import cli, create_worker

T = TypeVar("T")
POSTGRES_URL = os.environ.get("OUTDIAL_TEST_POSTGRES_URL")
SEED_CALL_KEYS = list(json.loads(Path("tests/data/seed_call_example.json").read_text())["call"])
CALL_KEYS = [*SEED_CALL_KEYS, "contact"]  # then the official client's newer ones
ALWAYS_OPEN = {
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [
        {"calling_window_start_time": "00:00", "calling_window_end_time": "23:59", "retry_delay_seconds": 1}
    ],
}
ORG_NUMBER = "+33159000001"
ORG_TRUNK = "ST_test_trunk"


# --- the stack: worker + API in their own thread and event loop, like `outdial dev` ------------------------


class StackThread:
    """A worker and the API (uvicorn on a free loopback port) sharing one Temporal client in a
    background event loop, so sync clients in tests never block them."""

    def __init__(self, settings: Settings, *, worker: bool = True) -> None:
        self.settings, self.worker = settings, worker
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="api-stack", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 — reported to the test thread
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        if not self.worker:  # the API alone, connecting to Temporal by itself when it needs it
            await self._serve(create_app(self.settings))
            return
        client = await Client.connect(
            self.settings.temporal_address,
            namespace=self.settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
        async with create_worker(client, task_queue=self.settings.task_queue, settings=self.settings):
            await self._serve(create_app(self.settings, temporal_client=client))

    async def _serve(self, app: FastAPI) -> None:
        async with ApiServer(app, port=0) as server:
            self.url = server.url
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> StackThread:
        self._thread.start()
        if not self._ready.wait(60) or self._error:
            raise RuntimeError(f"the API stack did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@dataclass
class Stack:
    url: str
    settings: Settings
    database: Database


@dataclass
class Org:
    id: str
    key: str
    client: Revox
    stack: Stack

    def raw(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("OUTDIAL_TEST_POSTGRES_URL is not set")
        return POSTGRES_URL
    return f"sqlite:///{tmp_path_factory.mktemp('api') / 'outdial.db'}"


@pytest.fixture(scope="module")
def stack(dev_env: Any, database_url: str) -> Iterator[Stack]:
    settings = settings_for_tests(
        database_url=database_url,
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=f"api-{uuid.uuid4()}",
    )
    with StackThread(settings) as thread:
        yield Stack(thread.url, settings, Database.for_url(database_url))


def new_org(stack: Stack, *, with_number: bool = True) -> Org:
    """A fresh organization (so tests never see each other's calls), its key and a client."""
    org_id = f"org_{uuid.uuid4().hex[:10]}"
    key = issue_api_key(stack.database, org_id, email=f"owner@{org_id}.test")
    if with_number:
        ensure_phone_number(stack.database, org_id, ORG_NUMBER, ORG_TRUNK, label="main line")
    return Org(org_id, key, Revox(api_key=key, base_url=stack.url, max_retries=0), stack)


@pytest.fixture
def org(stack: Stack) -> Org:
    return new_org(stack)


def eventually_sync(probe: Callable[[], T], until: Callable[[T], bool], *, timeout: float = 30) -> T:
    """Poll `probe` until `until(value)` holds (deadline-bound), for the sync client."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(0.05)


def quick_order(
    simulation: str, *, to: str = "+33612345678", attempts: int = 1, **extra: Any
) -> dict[str, Any]:
    """An order that calls at once and finishes in well under a second."""
    return {
        "phone_number": to,
        "assistant": {
            "prompt": "Offer {{name}} a demo of outdial.",
            "first_sentence": "Hi {{name}}, this is Camille from outdial.",
            "first_sentence_mode": "static",
            "structured_output_config": [{"name": "name", "type": "string", "required": True}],
            "call_retry_config": {**ALWAYS_OPEN, "max_retry_attempts": attempts},
        },
        "prompt_variables": {"name": "Claire"},
        "metadata": {"simulation": simulation, "crm_id": "crm-42"},
        "skip_calling_window": True,
        **extra,
    }


def finished(client: Revox, call_id: str) -> Any:
    """The order's final Call, once it is stored too: the live query can show the final state a moment
    before the workflow's last write lands (searches read the database)."""
    call = eventually_sync(
        lambda: client.call.retrieve(call_id).call,
        lambda c: c.status in ("completed", "errored", "cancelled"),
    )
    eventually_sync(
        lambda: client.call.search(**no_filters(call_ids=[call_id])).calls,
        lambda stored: [c.status for c in stored] == [call.status],
    )
    return call


# --- calls ---------------------------------------------------------------------------------------------


def test_server_timing_header_round_trips() -> None:
    timing = ServerTiming()
    with timing.phase("checks"):
        pass
    header = timing.header()["Server-Timing"]
    assert header.startswith("checks;dur=")
    assert parse_server_timing(header) == {"checks": float(header.removeprefix("checks;dur="))}
    assert parse_server_timing('db;dur=53, cache;desc="Cache Read";dur=23.2, miss') == {
        "db": 53.0,
        "cache": 23.2,
    }


def test_call_create_answers_the_seed_shape_then_runs_to_completion(org: Org) -> None:
    created = org.client.call.with_raw_response.create(**quick_order("human:interested"))
    body = created.json()["call"]
    assert list(body) == CALL_KEYS  # the seed's keys, in the seed's order, then the client's
    assert Call.model_validate(body).model_dump(mode="json") == body
    assert body["status"] == "initializing" and body["organization_id"] == org.id
    assert body["from_phone_number"] == ORG_NUMBER  # the organization's (only) number is its default
    assert str(uuid.UUID(body["id"])) == body["id"]
    timing = parse_server_timing(created.headers["Server-Timing"])  # where the answer's time went
    assert list(timing) == ["checks", "start_workflow", "start"] and all(ms > 0 for ms in timing.values())

    call = finished(org.client, body["id"])
    assert call.status == "completed" and call.outcome == "interested"
    assert call.calls_count == 1 and call.last_call_attempt.result == "human"
    assert call.call_attempts[0].transcript[0].content == "Hi Claire, this is Camille from outdial."
    assert call.call_attempts[0].structured_output == {"name": "Claire"}
    assert call.metadata == {"simulation": "human:interested", "crm_id": "crm-42"}

    # The stored state (what the API answers once the workflow closed) is the workflow's final Call.
    stored = org.client.call.search(**no_filters(call_ids=[call.id])).calls[0]
    assert stored.model_dump() == call.model_dump()
    # An id as GET /call/{id} takes it (any case) finds it in search too
    assert org.client.call.search(**no_filters(call_ids=[call.id.upper()])).total_count == 1


def test_what_post_answers_stays_true_in_every_later_read(org: Org) -> None:
    """created_at, scheduled_at and the assistant read back as POST /call answered them, live (the
    workflow's query, from the first moment) and stored."""
    placed = org.client.call.create(**quick_order("human:interested")).call
    live = org.client.call.retrieve(placed.id).call  # most often still initializing
    done = finished(org.client, placed.id)
    for call in (live, done):
        assert (call.created_at, call.scheduled_at) == (placed.created_at, placed.scheduled_at)
        assert call.assistant.id == placed.assistant.id == f"inline-{placed.id}"
        assert call.assistant.created_at == placed.assistant.created_at


@pytest.mark.parametrize("keyed", [False, True])
def test_post_answers_the_start_moved_into_the_calling_window(org: Org, keyed: bool) -> None:
    """An order placed outside its window answered scheduled_at = now (or as asked), then read as the
    window's opening: the answer, and every read from the first moment, says when it will start."""
    today = utcnow()
    tomorrow = today + timedelta(days=1)
    window = {
        "timezone": "UTC",
        "allowed_days": [tomorrow.strftime("%A").lower()],
        "calling_windows": [{"calling_window_start_time": "10:00", "calling_window_end_time": "11:00"}],
    }
    opening = tomorrow.replace(hour=10, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    asked = {"scheduled_at": today.isoformat()} if keyed else {}  # as asked when that is now or past
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"} if keyed else {}
    placed = org.client.call.create(
        phone_number="+33612345678",
        assistant={"prompt": "Hello", "call_retry_config": window},
        extra_headers=headers,
        **asked,
    ).call
    assert placed.scheduled_at == opening
    live = org.client.call.retrieve(placed.id).call
    waiting = eventually_sync(
        lambda: org.client.call.retrieve(placed.id).call, lambda c: c.status == "scheduled"
    )
    assert live.scheduled_at == waiting.scheduled_at == opening
    org.client.call.cancel(placed.id)


def test_the_newer_clients_concurrency_key_without_max_places_the_call(org: Org) -> None:
    """The client's `Concurrency` has only `key` ("the limit itself is set server-side")."""
    created = org.client.call.create(
        **quick_order("human:interested"), concurrency={"key": f"k-{uuid.uuid4()}"}
    )
    assert finished(org.client, created.call.id).status == "completed"


def test_the_clients_transfer_destinations_reach_the_call_and_bad_ones_are_a_422(org: Org) -> None:
    """Several labelled destinations are the agent's to choose from (the call shows them); a label
    given twice could not be chosen between, so it is refused with the field named."""
    order = quick_order("human:interested")
    destinations = [
        {"label": "Sales", "phone_number": "+33612345679"},
        {"label": "Support", "phone_number": "+33612345670"},
    ]
    order["assistant"] |= {"transfer_destinations": destinations}
    placed = org.client.call.create(**order).call
    done = org.client.call.retrieve(placed.id).call
    for call in (placed, done):
        assert call.assistant.transfer_phone_number == "+33612345679"
        assert [d["label"] for d in call.assistant.to_dict()["transfer_destinations"]] == ["Sales", "Support"]
    order["assistant"]["transfer_destinations"] = [destinations[0], {**destinations[1], "label": "sales"}]
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.call.create(**order)
    assert "transfer_destinations" in str(refused.value.body) and "unique" in str(refused.value.body)


def test_a_stored_assistants_transfer_destinations_are_replaced_or_cleared_by_an_update(org: Org) -> None:
    """The transfer number the first destination made was kept through an update of the list: a new
    list without it was refused (the client cannot send transfer_phone_number), and null or [] went on
    transferring callers to the old number."""
    sales = {"label": "Sales", "phone_number": "+33612345679"}
    support = {"label": "Support", "phone_number": "+33612345670"}
    created = org.client.assistants.create(name="T", prompt="Hi.", transfer_destinations=[sales]).assistant
    replaced = org.client.assistants.update(created.id, transfer_destinations=[support]).assistant
    assert replaced.transfer_phone_number == "+33612345670"
    for off in (None, []):
        cleared = org.client.assistants.update(created.id, transfer_destinations=off).assistant
        assert cleared.transfer_phone_number is None and not cleared.transfer_destinations
    chosen = org.client.assistants.update(
        created.id,
        transfer_destinations=[sales, support],
        extra_body={"transfer_phone_number": "+33612345670"},
    ).assistant
    renamed = org.client.assistants.update(
        created.id, name="T2"
    ).assistant  # the choice outlives other changes
    assert chosen.transfer_phone_number == renamed.transfer_phone_number == "+33612345670"


def test_the_clients_speech_options_reach_the_call_and_bad_ones_are_a_422(org: Org) -> None:
    """The speech-to-text context and the Cartesia pronunciation dictionary the client sends are the
    call's (the agent hands them to the transcription and the voice); a typo in the context, or an
    empty term, is refused with the field named."""
    order = quick_order("human:interested")
    context = {"general": [{"key": "company", "value": "Sunny Energy"}], "terms": ["Enphase", "kWc"]}
    order["assistant"] |= {"stt_context": context, "cartesia_dictionary_pronunciation_id": "pdict_1"}
    placed = org.client.call.create(**order).call
    done = finished(org.client, placed.id)
    for call in (placed, done):
        assert call.assistant.stt_context is not None
        assert call.assistant.stt_context.to_dict() == context
        assert call.assistant.cartesia_dictionary_pronunciation_id == "pdict_1"
    for bad, field in (({"terms": [""]}, "terms"), ({"general": [{"key": "k", "valeu": "v"}]}, "valeu")):
        order["assistant"]["stt_context"] = bad
        with pytest.raises(revox.UnprocessableEntityError) as refused:
            org.client.call.create(**order)
        assert "stt_context" in str(refused.value.body) and field in str(refused.value.body)


def test_the_clients_slack_notification_reaches_the_call_and_a_bad_one_is_a_422(org: Org) -> None:
    """The client's `slack` config is the call's (its notifications post it, tests/test_notify.py); one
    without channels, or with an outcome that does not exist, is refused with the field named."""
    order = quick_order("human:interested")
    slack = {
        "channels": [{"id": "C0SALES", "name": "sales"}],
        "connection_id": "conn_1",
        "outcomes": ["interested"],
    }
    order["assistant"] |= {"slack": slack}
    placed = org.client.call.create(**order).call
    assert placed.assistant.slack is not None
    assert placed.assistant.slack.to_dict() == slack
    for bad, field in (
        ({**slack, "channels": []}, "channels"),
        ({**slack, "outcomes": ["happy"]}, "outcomes"),
    ):
        order["assistant"]["slack"] = bad
        with pytest.raises(revox.UnprocessableEntityError) as refused:
            org.client.call.create(**order)
        assert "slack" in str(refused.value.body) and field in str(refused.value.body)


@pytest.mark.parametrize(
    "url",
    ["http:/hooks.example.com/t0ken", "https://hooks.example.com\\t0ken", "https://hooks example.com/t0ken"],
)
def test_a_webhook_url_no_http_client_can_send_to_is_a_422_that_does_not_quote_it(org: Org, url: str) -> None:
    """A slash short, a backslash for a slash: the URL parser reads a host, but no delivery could be
    sent (it failed at the call's end, for good). Refused at `POST /call` and `/assistants` alike,
    located, without echoing the URL (it often holds a token)."""
    order = quick_order("human:interested")
    order["assistant"] |= {"webhook_url": url}
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.call.create(**order)
    assert ["body", "assistant", "webhook_url"] in [e["loc"] for e in refused.value.body["error"]["details"]]
    with pytest.raises(revox.UnprocessableEntityError) as stored:
        org.client.assistants.create(name="Hooked", prompt="p", webhook_url=url)
    assert ["body", "webhook_url"] in [e["loc"] for e in stored.value.body["error"]["details"]]
    assert "t0ken" not in str(refused.value.body) + str(stored.value.body)


def test_the_clients_newer_fields_say_who_handled_the_call_and_who_the_contact_is(org: Org) -> None:
    """The client reads `contact` and each attempt's `handled_by_ai`/`handled_by_human` as always
    there: a callee who asks for a person is transferred (handled by both), the contact comes from
    the order's variables, and a voicemail before it was handled by the agent alone."""
    order = quick_order("voicemail,human:transfer", attempts=2)
    order["assistant"] |= {"transfer_destinations": [{"label": "Sales", "phone_number": "+33612345679"}]}
    order["prompt_variables"] |= {"first_name": "Claire", "company": "Acme"}
    placed = org.client.call.create(**order).call
    assert placed.contact.first_name == "Claire" and placed.contact.email is None
    call = finished(org.client, placed.id)
    transferred, voicemail = call.call_attempts
    assert (transferred.handled_by_ai, transferred.handled_by_human) == (True, True)
    assert transferred.end_reason == "transfer"
    assert transferred.transcript[-1].content == "Of course, I'm transferring you to Sales."
    assert (voicemail.handled_by_ai, voicemail.handled_by_human) == (True, False)
    assert (call.contact.first_name, call.contact.company, call.contact.last_name) == ("Claire", "Acme", None)
    stored = org.client.call.search(**no_filters(call_ids=[call.id])).calls[0]
    assert stored.contact.to_dict() == call.contact.to_dict()
    assert stored.last_call_attempt.handled_by_human is True


def test_a_concurrency_key_too_long_to_name_a_semaphore_is_a_422(org: Org) -> None:
    """A key names its semaphore's workflow id (1,000 bytes at most): one of 256 bytes is refused at
    once, where it would have queued for a permit forever."""
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.call.create(**quick_order("human:interested"), concurrency={"key": "k" * 256, "max": 1})
    assert "concurrency" in str(refused.value.body) and "255 bytes" in str(refused.value.body)
    created = org.client.call.create(**quick_order("human:interested"), concurrency={"key": "k" * 255})
    assert finished(org.client, created.call.id).status == "completed"


def test_two_organizations_saying_the_same_concurrency_key_have_a_limit_each(stack: Stack) -> None:
    """A key is the organization's own: another's call holding "trunk" (max 1) holds nothing of ours,
    and our max cannot change theirs."""
    key = f"trunk-{uuid.uuid4()}"
    theirs, ours = new_org(stack), new_org(stack)
    long_call = quick_order("human", concurrency={"key": key, "max": 1})
    long_call["metadata"] |= {"simulation.call_seconds": "600"}
    holding = theirs.client.call.create(**long_call).call
    eventually_sync(lambda: theirs.client.call.retrieve(holding.id).call.status, lambda s: s == "calling")
    created = ours.client.call.create(**quick_order("human:interested"), concurrency={"key": key, "max": 1})
    assert finished(ours.client, created.call.id).status == "completed"
    assert theirs.client.call.retrieve(holding.id).call.status == "calling"
    theirs.client.call.cancel(holding.id)
    assert finished(theirs.client, holding.id).status == "cancelled"


async def test_cancel_pause_resume_a_waiting_call_with_the_async_client(org: Org) -> None:
    async with AsyncRevox(api_key=org.key, base_url=org.stack.url, max_retries=0) as client:
        created = await client.call.create(phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z")
        call_id = created.call.id

        async def status() -> str:
            return (await client.call.retrieve(call_id)).call.status

        await eventually(status, lambda s: s == "scheduled")
        assert (await client.call.pause(call_id)).success
        await eventually(status, lambda s: s == "paused")
        assert (await client.call.resume(call_id)).success
        await eventually(status, lambda s: s == "scheduled")
        assert (await client.call.cancel(call_id)).success
        await eventually(status, lambda s: s == "cancelled")
        retrieved = (await client.call.retrieve(call_id)).call
        assert retrieved.is_cancelled and retrieved.calls_count == 0
        with pytest.raises(revox.ConflictError):  # an ended order cannot be cancelled again
            await client.call.cancel(call_id)


async def _terminate(stack: Stack, workflow_id: str, reason: str) -> None:
    """As an operator does from the Web UI: no workflow code runs."""
    client = await Client.connect(
        stack.settings.temporal_address, namespace=stack.settings.temporal_namespace
    )
    await client.get_workflow_handle(workflow_id).terminate(reason=reason)


async def _status_of(stack: Stack, workflow_id: str) -> WorkflowExecutionStatus | None:
    client = await Client.connect(
        stack.settings.temporal_address, namespace=stack.settings.temporal_namespace
    )
    return (await client.get_workflow_handle(workflow_id).describe()).status


def _stored_status(org: Org, call_id: str) -> list[str]:
    return [c.status for c in org.client.call.search(**no_filters(call_ids=[call_id])).calls]


def test_an_order_terminated_in_temporal_reads_as_cancelled_and_its_end_is_announced(org: Org) -> None:
    """Terminated by hand, an order's Call said `scheduled` for ever while a cancel answered 409 ("has
    ended"). Read, it is closed from Temporal's close event: `cancelled`, stored so, and its webhook is
    sent as an order's end is (the notifications workflow of the same id)."""
    hook = "http://127.0.0.1:9/hook"  # refused as private: the delivery ends at once, for good
    created = org.client.call.create(
        phone_number="+33612345678",
        scheduled_at="2099-01-05T09:00:00Z",
        assistant={"prompt": "Offer a demo.", "webhook_url": hook},
    ).call
    eventually_sync(lambda: org.client.call.retrieve(created.id).call.status, lambda s: s == "scheduled")
    asyncio.run(_terminate(org.stack, order_workflow_id(created.id), "wrong list"))

    call = org.client.call.retrieve(created.id).call
    assert (call.status, call.is_cancelled, call.outcome_summary) == (
        "cancelled",
        True,
        "terminated in Temporal: wrong list",
    )
    assert call.updated_at is not None and call.updated_at >= created.updated_at
    assert _stored_status(org, created.id) == ["cancelled"]  # search and export agree
    with pytest.raises(revox.ConflictError, match="is cancelled"):
        org.client.call.cancel(created.id)
    notify = f"notify-{created.id}"
    assert asyncio.run(_status_of(org.stack, notify)) is not None  # its end announced


async def _reset_to_its_last_task(stack: Stack, workflow_id: str) -> None:
    """As an operator undoes a termination (`temporal workflow reset --type LastWorkflowTask`)."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    client = await Client.connect(
        stack.settings.temporal_address, namespace=stack.settings.temporal_namespace
    )
    handle = client.get_workflow_handle(workflow_id)
    events = [event async for event in handle.fetch_history_events()]
    last = max(e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
            reason="undo the termination",
            workflow_task_finish_event_id=last,
            request_id=str(uuid.uuid4()),
        )
    )


async def _cancel_while_queries_go_unanswered(stack: Stack, organization_id: str, call_id: str) -> int:
    """`POST /call/{id}/cancel` of an API whose reads of running orders answer from the database for now:
    a query went unanswered (here of a workflow no worker polls for)."""
    from api.context import ApiContext
    from api.live_state import LiveState

    client = await Client.connect(
        stack.settings.temporal_address,
        namespace=stack.settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
    context = ApiContext(stack.settings, stack.database, client)
    context.live = LiveState(timeout=timedelta(seconds=0.5))
    unpolled = await client.start_workflow("Nobody", id=f"nobody-{uuid.uuid4()}", task_queue="nobody-polls")
    with contextlib.suppress(RPCError):  # unanswered: quiet from now on
        await context.live.call(unpolled)
    await unpolled.terminate()
    assert await context.live.call(client.get_workflow_handle(order_workflow_id(call_id))) is None
    return (await calls._signal(context, organization_id, call_id, "cancel")).status_code


def test_an_order_reset_in_temporal_after_it_ended_can_be_cancelled_again(org: Org) -> None:
    """Reset after a termination, an order runs again and may call, but its row said `cancelled` until
    its new run wrote: a cancel answered 409 ("can no longer be cancelled"), and it called."""
    created = org.client.call.create(phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z").call
    workflow_id = order_workflow_id(created.id)
    eventually_sync(lambda: org.client.call.retrieve(created.id).call.status, lambda s: s == "scheduled")
    asyncio.run(_terminate(org.stack, workflow_id, "oops"))
    assert org.client.call.retrieve(created.id).call.status == "cancelled"
    asyncio.run(_reset_to_its_last_task(org.stack, workflow_id))

    # as the API answers while queries go unanswered (a worker restarting): a review found it refused
    assert asyncio.run(_cancel_while_queries_go_unanswered(org.stack, org.id, created.id)) == 200
    eventually_sync(
        lambda: asyncio.run(_status_of(org.stack, workflow_id)),
        lambda status: status == WorkflowExecutionStatus.COMPLETED,
    )
    call = org.client.call.retrieve(created.id).call
    assert (call.status, call.is_cancelled, call.call_attempts) == ("cancelled", True, [])


def test_an_order_whose_last_write_was_lost_reads_as_its_workflow_ended_it(org: Org) -> None:
    """An order's final write can be given up (the database down for an hour): Temporal still holds its
    end, so a read answers it from the workflow, not from the row it left behind (the review)."""
    from sqlalchemy import update

    from models.tables import CallOrderRecord

    created = org.client.call.create(**quick_order("human:interested")).call
    ended = finished(org.client, created.id)
    with org.stack.database.session() as session:  # the row as the write before the last left it
        stale = {**ended.model_dump(mode="json"), "status": "post_processing", "outcome": None}
        lost = update(CallOrderRecord).where(CallOrderRecord.id == created.id)
        session.execute(lost.values(status="post_processing", outcome=None, call=stale))
        session.commit()
    call = org.client.call.retrieve(created.id).call
    assert (call.status, call.outcome) == ("completed", "interested")


def test_the_sweep_closes_terminated_orders_nobody_read(org: Org) -> None:
    """The API's sweep finds them through Temporal's visibility, so lists and campaign counts agree
    without a read of each; an order that runs is left alone."""
    from api.closed_orders import sweep_closed

    placed = [
        org.client.call.create(phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z").call
        for _ in range(2)
    ]
    ids = [each.id for each in placed]
    eventually_sync(lambda: [_stored_status(org, i) for i in ids], lambda s: s == [["scheduled"]] * 2)
    terminated, running = placed
    asyncio.run(_terminate(org.stack, order_workflow_id(terminated.id), ""))

    async def sweep() -> list[str]:
        settings = org.stack.settings
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        return await sweep_closed(client, org.stack.database, settings.task_queue, utcnow())

    closed = eventually_sync(
        lambda: asyncio.run(sweep()), lambda ids: terminated.id in ids
    )  # visibility lags
    assert running.id not in closed
    assert _stored_status(org, terminated.id) == ["cancelled"]
    assert _stored_status(org, running.id) == ["scheduled"]
    stored = org.client.call.retrieve(terminated.id).call
    assert stored.outcome_summary and stored.outcome_summary.startswith("terminated in Temporal")
    assert terminated.id not in asyncio.run(sweep())  # closed once
    org.client.call.cancel(running.id)


def test_more_attempts_than_an_order_makes_are_answered_as_held(org: Org) -> None:
    """max_retry_attempts above MOST_ATTEMPTS is held to it: the answer shows what will be applied."""
    retry = {"max_retry_attempts": 10_000}
    placed = org.client.call.create(
        phone_number="+33612345678",
        assistant={"prompt": "Hi", "call_retry_config": retry},
        scheduled_at="2099-01-05T09:00:00Z",
    ).call
    assert placed.call_retry_config.max_retry_attempts == MOST_ATTEMPTS
    status = lambda: org.client.call.retrieve(placed.id).call  # noqa: E731
    live = eventually_sync(status, lambda call: call.status == "scheduled")  # prepared by the workflow
    assert live.call_retry_config.max_retry_attempts == MOST_ATTEMPTS
    org.client.call.cancel(placed.id)


def test_cancel_or_pause_once_the_calls_are_over_is_a_conflict_and_the_order_completes(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While its conversation is analyzed (post_processing) there is no call left to cancel or pause:
    the API says so (409) instead of answering a success the workflow would ignore."""
    analyzing, release = threading.Event(), threading.Event()
    real_analyze = SimulatedAnalyzer.analyze

    async def held(self: SimulatedAnalyzer, request: AnalyzeRequest) -> AnalysisResult:
        analyzing.set()
        await asyncio.to_thread(release.wait, 30)  # the worker's loop runs in the stack's own thread
        return await real_analyze(self, request)

    monkeypatch.setattr(SimulatedAnalyzer, "analyze", held)
    try:
        call_id = org.client.call.create(**quick_order("human:interested")).call.id
        assert analyzing.wait(30)
        status = lambda: org.client.call.retrieve(call_id).call.status  # noqa: E731
        eventually_sync(status, lambda s: s == "post_processing")
        with pytest.raises(revox.ConflictError, match="post_processing"):
            org.client.call.cancel(call_id)
        with pytest.raises(revox.ConflictError, match="nothing to pause"):
            org.client.call.pause(call_id)
        env = {  # and so does the CLI, rather than "sent" for a signal the order ignores
            "OUTDIAL_CONFIG": "/dev/null",
            "OUTDIAL_CODEC_KEY": "plaintext",
            "TEMPORAL_ADDRESS": org.stack.settings.temporal_address,
            "TEMPORAL_NAMESPACE": org.stack.settings.temporal_namespace,
        }
        for signal in ("cancel", "pause", "force-now"):
            refused = CliRunner().invoke(cli.app, [signal, call_id], env=env)
            assert refused.exit_code == 2 and "is post_processing" in refused.output, refused.output
    finally:
        release.set()
    call = finished(org.client, call_id)
    assert (call.status, call.is_cancelled, call.outcome) == ("completed", False, "interested")


def test_an_order_cancelled_but_still_closing_refuses_a_second_cancel(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET answers `cancelled` from the workflow before its final state is written: cancel, pause and
    resume are then a 409 too, not a success the ended order ignores (a race seen in CI, PostgreSQL)."""
    closing, release = threading.Event(), threading.Event()
    real_write = persistence.write_call

    def held(database: Database, call: Call, seq: int, *rest: Any) -> bool:  # on a thread of the worker's
        if call.status == "cancelled":
            closing.set()
            release.wait(30)
        return real_write(database, call, seq, *rest)

    monkeypatch.setattr(persistence, "write_call", held)
    try:
        call_id = org.client.call.create(
            phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z"
        ).call.id
        eventually_sync(lambda: org.client.call.retrieve(call_id).call.status, lambda s: s == "scheduled")
        assert org.client.call.cancel(call_id).success
        assert closing.wait(30)
        assert org.client.call.retrieve(call_id).call.status == "cancelled"  # live; stored: scheduled
        for steer in (org.client.call.cancel, org.client.call.pause, org.client.call.resume):
            with pytest.raises(revox.ConflictError, match="is cancelled"):
                steer(call_id)
    finally:
        release.set()
    assert finished(org.client, call_id).status == "cancelled"


def test_idempotency_key_returns_the_same_call_and_never_a_second_one(org: Org) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    order = quick_order("human:completed", to="+33612345679")
    placed = org.client.call.with_raw_response.create(**order, extra_headers=key)
    assert list(parse_server_timing(placed.headers["Server-Timing"])) == ["checks", "claim", "start"]
    first = placed.parse().call
    again = org.client.call.create(**order, extra_headers=key).call
    assert again.id == first.id
    finished(org.client, first.id)
    replay = org.client.call.create(**order, extra_headers=key).call  # after the order ended, too
    assert replay.id == first.id and replay.status == "completed"
    assert org.client.call.search(**no_filters(to_phone_number="+33612345679")).total_count == 1
    with pytest.raises(revox.ConflictError):
        org.client.call.create(**{**order, "metadata": {"simulation": "busy"}}, extra_headers=key)


def test_an_idempotency_key_over_255_characters_is_a_422_and_the_header_is_documented(org: Org) -> None:
    order = quick_order("human:completed", to="+33612345680")
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.call.create(**order, extra_headers={"Idempotency-Key": "k" * 256})
    details = refused.value.body["error"]["details"]  # type: ignore[index]
    assert details == [
        {
            "loc": ["header", "Idempotency-Key"],
            "msg": "String should have at most 255 characters",
            "type": "string_too_long",
        }
    ]
    assert org.client.call.search(**no_filters(to_phone_number="+33612345680")).total_count == 0
    with org.raw() as raw:
        operation = raw.get("/openapi.json").json()["paths"]["/call"]["post"]
    header = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and header["schema"]["maxLength"] == 255


def test_an_order_is_placed_at_once_while_slow_reads_hold_the_databases_threads(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, an order's checks waited for a thread behind other requests' reads (the default
    pool's 6 threads on 2 cores, held by 50 searches): past the client's patience, a 503 "the database did
    not answer" with the database idle; everywhere, its row was written late."""
    release, held = threading.Event(), threading.Semaphore(0)
    real = store.search_calls

    def slow_search(*args: Any, **kwargs: Any) -> Any:
        held.release()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "search_calls", slow_search)
    readers = min(32, (os.cpu_count() or 1) + 4) + 2  # more than the default pool has threads
    with ThreadPoolExecutor(readers) as pool:
        searches = [pool.submit(org.client.call.search, **no_filters()) for _ in range(readers)]
        try:
            for _ in range(readers - 2):  # every thread of the default pool is held
                assert held.acquire(timeout=30)
            call = org.client.call.create(**quick_order("human")).call  # was a 503 on PostgreSQL
            assert store.get_call(org.stack.database, org.id, call.id) is not None  # its row, written
        finally:
            release.set()
        assert all(search.result(timeout=60).total_count >= 0 for search in searches)


def test_another_organizations_live_call_is_not_found_without_asking_its_workflow(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its 404 asked the order's workflow first (a row of another organization read as none): twice as
    slow as the 404 for no call, it told that a live call had this id, and had the worker answer for it."""
    theirs = org.client.call.create(**quick_order("human")).call
    asked: list[str] = []
    real = calls._started_without_row

    async def asking(context: Any, organization_id: str, call_id: str) -> Any:
        asked.append(call_id)
        return await real(context, organization_id, call_id)

    monkeypatch.setattr(calls, "_started_without_row", asking)
    other = new_org(org.stack)
    for steer in (other.client.call.retrieve, other.client.call.cancel, other.client.call.pause):
        with pytest.raises(revox.NotFoundError):
            steer(theirs.id)
    assert asked == []
    assert org.client.call.retrieve(theirs.id).call.id == theirs.id  # its own organization's, as before


def test_an_organization_cannot_take_another_ones_caller_id_or_trunk(org: Org) -> None:
    """Any organization could register another's number, or name its trunk, and dial with its caller id
    through its carrier (a number registered without a trunk took the operator's LIVEKIT_SIP_TRUNKS
    entry for it, whoever registered it). The platform's default trunk stays everyone's."""
    theirs = f"+3315900{uuid.uuid4().int % 10**4:04d}"
    their_trunk = f"ST_{uuid.uuid4().hex[:8]}"
    with org.raw() as http:
        added = http.post(
            "/phone-numbers", json={"phone_number": theirs, "livekit_outbound_trunk_id": their_trunk}
        )
        assert added.status_code == 200, added.text
    other = new_org(org.stack, with_number=False)
    with other.raw() as http:
        taken = http.post("/phone-numbers", json={"phone_number": theirs})
        assert (taken.status_code, taken.json()["error"]["message"]) == (
            409,
            f"{theirs} is another organization's number",
        )
        mine = f"+3315901{uuid.uuid4().int % 10**4:04d}"
        borrowed = http.post(
            "/phone-numbers", json={"phone_number": mine, "livekit_outbound_trunk_id": their_trunk}
        )
        assert borrowed.status_code == 409 and "dials another organization's numbers" in borrowed.text
        own = http.post("/phone-numbers", json={"phone_number": mine}).json()["phone_number"]
        moved = http.patch(f"/phone-numbers/{own['id']}", json={"livekit_outbound_trunk_id": their_trunk})
        assert moved.status_code == 409, moved.text
        default = org.stack.settings.livekit_sip_outbound_trunk_id
        if default:
            shared = http.patch(f"/phone-numbers/{own['id']}", json={"livekit_outbound_trunk_id": default})
            assert shared.status_code == 200, shared.text
    with pytest.raises(revox.UnprocessableEntityError):  # and it cannot call from it
        other.client.call.create(**quick_order("human"), from_phone_number=theirs)
    default = org.stack.settings.default_from_phone_number  # the platform's, everyone's
    for each in (org, other):
        with each.raw() as http:
            assert http.post("/phone-numbers", json={"phone_number": default}).status_code == 200
    # Registered by two organizations at the same moment: one of them has it.
    numbers = [f"+3315902{uuid.uuid4().int % 10**4:04d}" for _ in range(12)]

    def register(who: Org, number: str) -> int:
        with who.raw() as http:
            return http.post("/phone-numbers", json={"phone_number": number}).status_code

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda job: register(*job), [(w, n) for n in numbers for w in (org, other)]))
    assert sorted(answers) == [200] * len(numbers) + [409] * len(numbers), answers
    # A trunk chosen by a PATCH while another organization registers a number with it: one of the two.
    with other.raw() as http:
        own = http.post("/phone-numbers", json={"phone_number": f"+3315903{uuid.uuid4().int % 10**4:04d}"})
    own_id = own.json()["phone_number"]["id"]
    trunks = [f"ST_{uuid.uuid4().hex[:8]}" for _ in range(16)]

    def register_with(trunk: str) -> int:
        number = f"+3315904{uuid.uuid4().int % 10**4:04d}"
        with org.raw() as http:
            body = {"phone_number": number, "livekit_outbound_trunk_id": trunk}
            return http.post("/phone-numbers", json=body).status_code

    def move_to(trunk: str) -> int:
        with other.raw() as http:
            body = {"livekit_outbound_trunk_id": trunk}
            return http.patch(f"/phone-numbers/{own_id}", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        jobs = [(take, trunk) for trunk in trunks for take in (register_with, move_to)]
        answers = list(pool.map(lambda job: job[0](job[1]), jobs))
    assert sorted(answers) == [200] * len(trunks) + [409] * len(trunks), answers


def test_the_schema_of_post_call_names_every_field_the_official_client_sends(org: Org) -> None:
    """`skip_calling_window` (the client's name for `force_now`) was missing from the body's schema, which
    allows no other property: tools built on it (`/docs`, validators, generated clients) refused it."""
    from revox.types.call_create_params import CallCreateParams as ClientParams

    with org.raw() as raw:
        openapi = raw.get("/openapi.json").json()
    body = openapi["paths"]["/call"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = openapi["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert schema["additionalProperties"] is False
    assert set(ClientParams.__annotations__) <= set(schema["properties"])
    assert schema["properties"]["skip_calling_window"]["type"] == "boolean"


def test_a_stored_assistant_and_a_second_caller_id_are_used_by_the_order(org: Org) -> None:
    with org.raw() as http:
        added = http.post(
            "/phone-numbers", json={"phone_number": "+33159000002", "livekit_outbound_trunk_id": "ST_2"}
        )
        assert added.status_code == 200, added.text
    stt_context = {"general": [{"key": "product", "value": "Sunny demo"}], "terms": ["Enphase"]}
    assistant = org.client.assistants.create(
        name="Sales",
        prompt="Offer {{name}} a demo.",
        from_phone_number="+33159000002",
        stt_context=stt_context,
    ).assistant
    assert assistant.stt_context is not None and assistant.stt_context.to_dict() == stt_context
    call = org.client.call.create(
        phone_number="+33612345670",
        assistant_id=assistant.id,
        metadata={"simulation": "human:completed"},
        skip_calling_window=True,
    ).call
    assert call.assistant.id == assistant.id and call.assistant.name == "Sales"
    assert call.assistant.stt_context is not None and call.assistant.stt_context.terms == ["Enphase"]
    assert call.from_phone_number == "+33159000002"
    done = finished(org.client, call.id)
    assert done.status == "completed" and done.assistant.id == assistant.id
    assert done.from_phone_number == "+33159000002"
    found = org.client.call.search(
        **no_filters(assistant_ids=[assistant.id], from_phone_numbers=["+33159000002"])
    )
    assert [c.id for c in found.calls] == [call.id]


def test_the_editors_fields_of_an_assistant_are_kept_and_shown_back(org: Org) -> None:
    """Revox's editor keeps its logo, canvas position and visual prompt flow on the assistant: stored
    and shown back as given, with whatever else the editor put there (a call never reads them),
    updated and cleared like any field."""
    flow = {
        "edges": [{"id": "e1", "source": "n1", "target": "n2", "animated": True}],
        "nodes": [
            {
                "id": f"n{i}",
                "data": {"body": f"Step {i}", "title": f"T{i}"},
                "position": {"x": i * 10.0, "y": 0.5},
                "type": "promptBlock",
            }
            for i in (1, 2)
        ],
    }
    created = org.client.assistants.create(
        name="Editor",
        prompt="Step 1. Step 2.",
        logo_url="https://example.com/logo.png",
        position={"x": 1.5, "y": -2.0},
        prompt_flow=flow,
    ).assistant
    read = org.client.assistants.retrieve(created.id)  # unwrapped, as the client expects
    for assistant in (created, read):
        assert assistant.logo_url == "https://example.com/logo.png"
        assert assistant.position is not None and (assistant.position.x, assistant.position.y) == (1.5, -2.0)
        assert assistant.prompt_flow is not None and assistant.prompt_flow.to_dict() == flow
    cleared = org.client.assistants.update(created.id, prompt_flow=None, position={"x": 0, "y": 0}).assistant
    assert cleared.prompt_flow is None and cleared.logo_url == "https://example.com/logo.png"
    assert cleared.position is not None and (cleared.position.x, cleared.position.y) == (0, 0)
    for bad_node in (
        {"type": "codeBlock"},
        {"position": {"x": 0, "y": False}},
        {"position": {"x": "1", "y": 0}},
    ):
        bad = {**flow, "nodes": [{**flow["nodes"][0], **bad_node}]}
        with pytest.raises(revox.UnprocessableEntityError) as refused:
            org.client.assistants.create(name="Bad", prompt="x", prompt_flow=bad)
        assert "prompt_flow" in str(refused.value.body)


# --- errors and scoping ----------------------------------------------------------------------------------


def test_a_body_over_16_mb_is_refused_before_it_is_read_or_authenticated(org: Org) -> None:
    """Before, any client, without a key, could make the API hold a body of any size in memory. A 413
    (plain text when its Content-Length says so at once, else the API's JSON), and the API serves on."""
    too_big = b'{"phone_number": "' + b"1" * MAX_BODY_BYTES + b'"}'
    with httpx.Client(base_url=org.stack.url, timeout=60) as anonymous:
        declared = anonymous.post("/call", content=too_big, headers={"content-type": "application/json"})
        assert (declared.status_code, declared.text) == (413, "Content Too Large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(too_big), 1 << 20):
                yield too_big[start : start + (1 << 20)]

        streamed = anonymous.post("/call", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "request_too_large"
    assert org.client.call.create(**quick_order("human")).call.status == "initializing"


def test_the_database_unreachable_is_a_503_to_retry_not_a_500() -> None:
    """As when Temporal is down: the official client retries it (no `x-should-retry: false`). Before, it
    was a 500 "internal error", which says there is a bug."""
    [closed] = free_ports(1)  # a port nothing listens on
    unreachable = settings_for_tests(database_url=f"postgresql://outdial:x@127.0.0.1:{closed}/outdial")
    with StackThread(unreachable, worker=False) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        headers = {"Authorization": "Bearer odk_any"}
        for method, path, body in (
            ("POST", "/call", {"phone_number": "+33612345678"}),
            ("POST", "/call/search", {"page": 1, "page_size": 10}),
            ("GET", "/assistants", None),
        ):
            answer = http.request(method, path, json=body, headers=headers)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"] == {
                "type": "unavailable",
                "message": "the database is unavailable; retry later",
            }
            assert "x-should-retry" not in answer.headers


def test_an_api_started_while_its_database_was_unreachable_serves_once_it_is_up(tmp_path: Path) -> None:
    """It starts all the same (before, `outdial api` ended at start with a 170-line traceback), answers
    503, and migrates and serves as soon as the database opens."""
    path = tmp_path / "outdial.db"
    path.mkdir()  # SQLite cannot open a directory: unreachable until it is removed
    settings = settings_for_tests(database_url=f"sqlite:///{path}")
    with StackThread(settings, worker=False) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        assert http.get("/assistants", headers={"Authorization": "Bearer odk_any"}).status_code == 503
        path.rmdir()
        assert http.get("/assistants", headers={"Authorization": "Bearer odk_any"}).status_code == 401
        key = issue_api_key(Database.for_url(settings.database_url), "org_up")  # on the schema it made
        answer = http.get("/assistants", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.json()["assistants"] == [], answer.text


def test_errors_are_the_clients_error_classes_with_a_json_body(stack: Stack, org: Org) -> None:
    with pytest.raises(revox.AuthenticationError):
        Revox(api_key="odk_not-a-key", base_url=stack.url, max_retries=0).call.retrieve(str(uuid.uuid4()))
    with pytest.raises(revox.NotFoundError):
        org.client.call.retrieve(str(uuid.uuid4()))
    with pytest.raises(revox.NotFoundError):
        org.client.call.retrieve("not-a-uuid")
    with pytest.raises(revox.UnprocessableEntityError) as invalid:
        org.client.call.create(phone_number="+1555")
    assert invalid.value.body["error"]["type"] == "validation_error"
    assert invalid.value.body["error"]["details"][0]["loc"] == ["body", "phone_number"]
    for misplaced in ({"webhook_url": "https://example.com/hook"}, {"prompt_variable": {"name": "Ada"}}):
        with pytest.raises(revox.UnprocessableEntityError) as unknown_field:  # not dropped without a word
            org.client.call.create(phone_number="+33612345678", extra_body=misplaced)
        assert unknown_field.value.body["error"]["details"][0]["loc"] == ["body", *misplaced]
    with pytest.raises(revox.UnprocessableEntityError) as zoneless:  # Kaliningrad to Kamchatka
        org.client.call.create(phone_number="+79161234567", scheduled_at="2099-01-05T09:00:00Z")
    assert "call_retry_config.timezone" in zoneless.value.body["error"]["message"]
    # named where the timezone is set: the request's assistant, or the stored one it names
    assert zoneless.value.body["error"]["details"][0]["loc"] == [
        "body",
        "assistant",
        "call_retry_config",
        "timezone",
    ]
    stored = org.client.assistants.create(name="Zoneless", prompt="Hi").assistant
    with pytest.raises(revox.UnprocessableEntityError) as zoneless:
        org.client.call.create(phone_number="+79161234567", assistant_id=stored.id)
    assert zoneless.value.body["error"]["details"][0]["loc"] == ["body", "assistant_id"]
    assert "the assistant's call_retry_config.timezone" in zoneless.value.body["error"]["message"]
    org.client.assistants.delete(stored.id)
    placed = org.client.call.create(
        phone_number="+79161234567",
        scheduled_at="2099-01-05T09:00:00Z",
        assistant={"prompt": "Hi", "call_retry_config": {"timezone": "Europe/Moscow"}},
    )
    org.client.call.cancel(placed.call.id)
    with pytest.raises(revox.UnprocessableEntityError) as unknown:
        org.client.call.create(phone_number="+33612345678", assistant_id=str(uuid.uuid4()))
    assert "assistant_id" in unknown.value.body["error"]["message"]
    with pytest.raises(revox.UnprocessableEntityError) as foreign:
        org.client.call.create(phone_number="+33612345678", from_phone_number="+14155552671")
    assert "from_phone_number" in foreign.value.body["error"]["message"]
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.call.create(
            phone_number="+33612345678", assistant={"prompt": "Hi", "from_phone_number": "+14155552671"}
        )
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.assistants.create(name="x", prompt="y", from_phone_number="+14155552671")
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.call.search(**no_filters(page=0))
    with org.raw() as http:
        not_json = http.post("/call", content=b"{not json", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and not_json.json()["error"]["type"] == "validation_error"
        body = b'{"phone_number": "+33612345678"}'
        form_type = {"content-type": "application/x-www-form-urlencoded"}
        for sent_as, said in (
            (form_type, "(not application/x-www-form-urlencoded)"),
            ({}, "(the request had none)"),
            ({"content-type": "text/json"}, "(not text/json)"),  # JSON, in a type FastAPI does not read
        ):
            form = http.post("/call", content=body, headers=sent_as)  # as `curl -d`, or without a type
            assert form.status_code == 422, form.text
            message = form.json()["error"]["message"]
            assert message.startswith("the body must be JSON, sent with Content-Type: application/json (")
            assert said in message, message
        for method, path, allowed in (
            ("OPTIONS", "/assistants", "GET, HEAD, POST"),
            ("PUT", "/call", "POST"),
            ("OPTIONS", "/call/export", "POST"),  # its own resource, not the id of GET /call/{id}
        ):
            refused = http.request(method, path)  # RFC 9110: a 405 lists every method the resource takes
            assert (refused.status_code, refused.headers["allow"]) == (405, allowed), (method, path)
        head = http.head("/assistants")  # as the Allow says (it was a 405): GET's headers, no body
        get = http.get("/assistants")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
        assert "head" not in http.get("/openapi.json").json()["paths"]["/assistants"]
        nested = b'{"phone_number": "+33612345678", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        deep = http.post("/call", content=nested, headers={"content-type": "application/json"})
        assert deep.status_code == 422 and deep.json()["error"]["details"][0]["loc"] == ["body"], deep.text
        latin1 = '{"phone_number": "+33612345678", "metadata": {"name": "Zoé"}}'.encode("latin-1")
        for path in ("/call", "/assistants", "/call/search"):
            not_utf8 = http.post(path, content=latin1, headers={"content-type": "application/json"})
            assert not_utf8.status_code == 422, (path, not_utf8.text)
            assert not_utf8.json()["error"]["details"][0]["loc"] == ["body", latin1.index(b"\xe9")]
            assert "must be UTF-8" in not_utf8.json()["error"]["message"]
        missing_key = httpx.get(f"{stack.url}/assistants")
        assert missing_key.status_code == 401 and "Bearer" in missing_key.json()["error"]["message"]
        assert missing_key.headers["WWW-Authenticate"] == "Bearer"  # RFC 9110


def test_bodies_that_could_not_be_stored_or_started_are_refused_and_leave_nothing(org: Org) -> None:
    """A lone surrogate (half an emoji, as JavaScript escapes it), an instant datetime cannot hold in
    UTC, a start beyond the server's timers, an order over Temporal's payload limit: each is a 4xx
    naming the problem (not a 500 or a retried 503) and no call or assistant is left behind."""
    half_emoji = b'"Hi \\ud83d"'
    with org.raw() as http:
        for path, body, loc in (
            ("/call", b'{"phone_number": "+33612345678", "metadata": {"k": %s}}', ["body", "metadata", "k"]),
            ("/assistants", b'{"name": "A", "prompt": %s}', ["body", "prompt"]),
            ("/call/search", b'{"page": 1, "page_size": 10, "query": %s}', ["body", "query"]),
        ):
            answer = http.post(path, content=body % half_emoji, headers={"content-type": "application/json"})
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["error"]["details"][0]["loc"] == loc
        assert http.post(
            "/call", json={"phone_number": "+33612345678", "metadata": {"e": "\U0001f600"}}
        ).is_success
        for scheduled_at in ("9999-12-31T23:30:00-01:00", "2200-01-05T09:00:00Z"):
            late = http.post("/call", json={"phone_number": "+33612345678", "scheduled_at": scheduled_at})
            assert late.status_code == 422 and "scheduled_at" in late.json()["error"]["message"], late.text
        for size in (2_500_000, 5_000_000):  # Temporal's payload limit, then its gRPC message limit
            huge = http.post("/call", json={"phone_number": "+33612345678", "metadata": {"k": "x" * size}})
            assert huge.status_code == 413, huge.text
            assert huge.json()["error"]["type"] == "request_too_large"
        # Within them, but more than each attempt of the order can carry (it stalled, or was terminated).
        for fields in ({"prompt_variables": {"k": "x" * 70_000}}, {"metadata": {"k": "x" * 70_000}}):
            big = http.post("/call", json={"phone_number": "+33612345678", **fields})
            assert big.status_code == 413, big.text
            assert "are 70009 bytes of JSON, at most 65536 together" in big.json()["error"]["message"]
        both = {"prompt_variables": {"k": "x" * 33_000}, "metadata": {"k": "y" * 33_000}}
        assert http.post("/call", json={"phone_number": "+33612345678", **both}).status_code == 413
    assert org.client.assistants.list().assistants == []
    assert org.client.call.search(**no_filters()).total_count == 1  # the emoji's order only


def test_a_422_names_its_field_once_whatever_the_field_is_called(org: Org) -> None:
    """A field named like a request part (`query`, `body`) is named in the message; a bad value of a
    search's list filter is one error at its index (it was two, located at pydantic's union tags); a
    string's bound speaks of characters, not items."""
    with org.raw() as http:
        for path, body, loc, message in (
            (
                "/call/search",
                {"query": "x" * 201},
                ["body", "query"],
                "query: String should have at most 200 characters",
            ),
            (
                "/call",
                {"phone_number": "+33612345678", "metadata": {"body": 2}},
                ["body", "metadata", "body"],
                "metadata.body: Input should be a valid string",
            ),
            ("/call/search", {"statuses": ["bogus"]}, ["body", "statuses", 0], "statuses.0: Input should be"),
            ("/call/search", {"outcomes": ["bogus"]}, ["body", "outcomes", 0], "outcomes.0: Input should be"),
            (
                "/assistants",
                {"name": "A", "prompt": "Hi", "after_call_sms_outcomes": ["bogus"]},
                ["body", "after_call_sms_outcomes", 0],
                "after_call_sms_outcomes.0: Input should be",
            ),
        ):
            answer = http.post(path, json=body)
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert [d["loc"] for d in error["details"]] == [loc], error
            assert error["message"].startswith(message), error["message"]


def test_an_order_with_a_nul_character_runs_and_is_stored_as_sent(org: Org) -> None:
    """JSON may carry NUL (\\u0000) in any string, and PostgreSQL's text cannot hold it. Before, such an
    order on PostgreSQL was answered 200, then its row could never be written: the API's placeholder
    failed, and the workflow's every write was retried forever, so the call could not be read back."""
    order = quick_order("human")
    order["assistant"]["prompt"] = "Offer a demo.\x00"
    order["metadata"] |= {"note": "a\x00b"}
    order["prompt_variables"] = {"name": "Cla\x00ire"}
    call = org.client.call.create(**order).call
    done = finished(org.client, call.id)
    assert (done.status, done.outcome) == ("completed", "interested")
    stored = org.client.call.search(**no_filters(call_ids=[call.id])).calls[0]
    assert stored.metadata["note"] == "a\x00b" and stored.prompt_variables == {"name": "Cla\x00ire"}
    assert org.client.call.search(**no_filters(query="claire")).total_count == 1  # its index drops the NUL


def test_an_id_with_a_nul_character_names_nothing_on_every_database(org: Org) -> None:
    """A 404 as for any unknown id (on PostgreSQL the lookup itself was refused: a 422 that blamed a value
    "that could not be stored"), and a campaign's assistant_id with one is a 422 that names the field."""
    with org.raw() as http:
        for path in ("/call/a%00b", "/assistants/a%00b", "/campaigns/a%00b", "/phone-numbers/a%00b"):
            answer = http.get(path) if "phone" not in path else http.delete(path)
            assert answer.status_code == 404, (path, answer.text)
        contacts = [{"to_phone_number": "+33612345678"}]
        refused = http.post("/campaigns", json={"name": "N", "assistant_id": "a\x00b", "contacts": contacts})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["loc"] == ["body", "assistant_id"]


def test_an_organization_never_sees_another_ones_objects(stack: Stack, org: Org) -> None:
    other = new_org(stack)
    call = other.client.call.create(phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z").call
    assistant = other.client.assistants.create(name="Theirs", prompt="Hi").assistant
    with pytest.raises(revox.NotFoundError):
        org.client.call.retrieve(call.id)
    with pytest.raises(revox.NotFoundError):
        org.client.call.cancel(call.id)
    with pytest.raises(revox.NotFoundError):
        org.client.assistants.retrieve(assistant.id)
    with pytest.raises(revox.NotFoundError):
        org.client.assistants.delete(assistant.id)
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.call.create(phone_number="+33612345678", assistant_id=assistant.id)
    other_number = other.client.phone_numbers.list().phone_numbers[0].id
    with pytest.raises(revox.NotFoundError):
        org.client.phone_numbers.delete(other_number)
    assert org.client.call.search(**no_filters()).total_count == 0
    assert [a.id for a in org.client.assistants.list().assistants] == []
    other.client.call.cancel(call.id)


# --- assistants ------------------------------------------------------------------------------------------


def test_every_call_parses_strictly_in_the_official_client_with_its_stt_model_and_type(org: Org) -> None:
    """The client's Call requires `assistant.stt_model` and `assistant.type`: they were in /assistants
    answers only, so every Call failed its strict validation, and the values given were dropped."""
    from revox.types import CallRetrieveResponse

    stored = org.client.assistants.create(name="Flow", prompt="Hi", stt_model="stt-rt-v4", type="multi-step")
    assert (stored.assistant.stt_model, stored.assistant.type) == ("stt-rt-v4", "multi-step")
    updated = org.client.assistants.update(stored.assistant.id, type="standalone").assistant
    assert (updated.stt_model, updated.type) == ("stt-rt-v4", "standalone")
    inline = org.client.call.create(
        phone_number="+33612345678",
        assistant={"prompt": "Hi", "stt_model": "stt-rt-v4"},
        scheduled_at="2099-01-05T09:00:00Z",
    ).call
    by_id = org.client.call.create(
        phone_number="+33612345678", assistant_id=stored.assistant.id, scheduled_at="2099-01-05T09:00:00Z"
    ).call
    for call, expected in ((inline, ("stt-rt-v4", "standalone")), (by_id, ("stt-rt-v4", "standalone"))):
        read = org.client.call.retrieve(call.id)
        CallRetrieveResponse.model_validate(read.to_dict())  # strict: every required field there
        assert (read.call.assistant.stt_model, read.call.assistant.type) == expected
        org.client.call.cancel(call.id)
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.assistants.create(name="Bad", prompt="Hi", stt_model="bogus")  # type: ignore[arg-type]
    assert refused.value.body["error"]["details"][0]["loc"] == ["body", "stt_model"]


def test_assistants_crud_and_clone(org: Org) -> None:
    created = org.client.assistants.create(
        name="Receptionist",
        prompt="Greet {{name}}.",
        voice={"id": "a167e0f3-df7e-4d52-a9c3-f949145efdab", "provider": "cartesia", "speed": 1.1},
        call_retry_config={**ALWAYS_OPEN, "max_retry_attempts": 2},
        from_phone_number=ORG_NUMBER,
    ).assistant
    assert created.name == "Receptionist" and created.organization_id == org.id
    assert created.voice.provider == "cartesia" and created.call_retry_config.max_retry_attempts == 2
    assert created.first_sentence_delay_ms == 400 and created.type == "standalone"

    retrieved = org.client.assistants.retrieve(created.id)  # unwrapped, as the client expects
    assert retrieved.id == created.id and retrieved.prompt == "Greet {{name}}."
    assert org.client.assistants.retrieve(created.id.upper()).id == created.id  # as POST /call takes it

    updated = org.client.assistants.update(created.id, name="Front desk", first_sentence="Hello!").assistant
    assert (updated.name, updated.first_sentence, updated.prompt) == (
        "Front desk",
        "Hello!",
        "Greet {{name}}.",
    )
    assert updated.voice.id == created.voice.id  # fields not given are kept
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.assistants.update(created.id, voice={"id": "x", "provider": "cartesia", "speed": 9})
    assert refused.value.body["error"]["details"][0]["loc"] == ["body", "voice", "speed"]  # as on create
    assert org.client.assistants.retrieve(created.id).name == "Front desk"  # a refused update changes nothing

    clone = org.client.assistants.clone(created.id).assistant
    assert clone.id != created.id and clone.name == "Front desk (Copy)" and clone.prompt == updated.prompt
    assert {a.id for a in org.client.assistants.list().assistants} == {created.id, clone.id}

    assert org.client.assistants.delete(created.id.upper()).success  # in any case, as GET takes it
    with pytest.raises(revox.NotFoundError):
        org.client.assistants.retrieve(created.id)
    with pytest.raises(revox.NotFoundError):
        org.client.assistants.delete(created.id)
    assert [a.id for a in org.client.assistants.list().assistants] == [clone.id]
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.assistants.create(name="", prompt="x")


def test_an_assistant_too_large_for_its_orders_to_carry_is_refused(org: Org) -> None:
    """Each step of an order carries its assistant through Temporal: one over 256 KB of JSON is a 413,
    created or updated, and the stored one stays as it was. Before, it was stored, and each of its orders
    stalled an hour in `initializing` before it errored."""
    prompt = "y" * (256 * 1024)
    with pytest.raises(revox.APIStatusError) as refused:
        org.client.assistants.create(name="Big", prompt=prompt)
    assert refused.value.status_code == 413 and "the assistant is too large" in str(refused.value.body)
    stored = org.client.assistants.create(name="Small", prompt="Hi").assistant
    with pytest.raises(revox.APIStatusError) as refused:
        org.client.assistants.update(stored.id, prompt=prompt)
    assert refused.value.status_code == 413
    assert org.client.assistants.retrieve(stored.id).prompt == "Hi"
    assert [a.name for a in org.client.assistants.list().assistants] == ["Small"]
    with pytest.raises(revox.APIStatusError) as refused:  # an order's inline one alike
        org.client.call.create(phone_number="+33612345678", assistant={"prompt": prompt})
    assert refused.value.status_code == 413 and "the assistant is too large" in str(refused.value.body)
    # measured as the order carries it, defaults filled in: 15 KB of request, 500 KB of assistant
    windows = {"calling_windows": [{}] * 5000}
    with org.raw() as http:
        small = {"phone_number": "+33612345678", "assistant": {"prompt": "Hi", "call_retry_config": windows}}
        answer = http.post("/call", json=small)
        assert answer.status_code == 413 and len(answer.request.content) < 64_000, answer.text
        assert http.post("/assistants", json={"name": "A", **small["assistant"]}).status_code == 413
    assert org.client.call.search(**no_filters()).total_count == 0


# --- phone numbers, voices, account --------------------------------------------------------------------


def test_phone_numbers_list_update_delete(org: Org) -> None:
    numbers = org.client.phone_numbers.list().phone_numbers
    assert [(n.phone_number, n.livekit_outbound_trunk_id, n.label) for n in numbers] == [
        (ORG_NUMBER, ORG_TRUNK, "main line")
    ]
    assistant = org.client.assistants.create(name="Inbound", prompt="Answer.").assistant
    updated = org.client.phone_numbers.update(numbers[0].id, label="HQ", inbound_assistant_id=assistant.id)
    assert updated.phone_number.label == "HQ" and updated.phone_number.inbound_assistant.id == assistant.id
    with pytest.raises(revox.UnprocessableEntityError):
        org.client.phone_numbers.update(numbers[0].id, inbound_assistant_id=str(uuid.uuid4()))
    with org.raw() as http:
        assert http.post("/phone-numbers", json={"phone_number": ORG_NUMBER}).status_code == 409
        # null clears its trunk (it was kept): the number goes through LIVEKIT_SIP_TRUNKS, else the default
        cleared = http.patch(f"/phone-numbers/{numbers[0].id}", json={"livekit_outbound_trunk_id": None})
        assert cleared.json()["phone_number"]["livekit_outbound_trunk_id"] is None, cleared.text
        assert cleared.json()["phone_number"]["label"] == "HQ"  # the rest as it was
        # a blank trunk id, or one with spaces within, was stored and dialled through: no server knows it
        for blank in ("  ", "ST_a b"):
            refused = http.patch(f"/phone-numbers/{numbers[0].id}", json={"livekit_outbound_trunk_id": blank})
            assert refused.status_code == 422 and "livekit_outbound_trunk_id" in refused.text, refused.text
        padded = http.patch(f"/phone-numbers/{numbers[0].id}", json={"livekit_outbound_trunk_id": " ST_9 "})
        assert padded.json()["phone_number"]["livekit_outbound_trunk_id"] == "ST_9", padded.text
        added = http.post(
            "/phone-numbers", json={"phone_number": "+33159000099", "livekit_outbound_trunk_id": " "}
        )
        assert added.status_code == 422, added.text
    assert org.client.phone_numbers.delete(numbers[0].id).success
    with pytest.raises(revox.NotFoundError):
        org.client.phone_numbers.delete(numbers[0].id)
    assert org.client.phone_numbers.list().phone_numbers == []


class _FakeTts(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 — http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeTts.requests.append((self.path, dict(self.headers), body))
        if _FakeTts.status != 200:  # the provider refusing the operator's key, say, and quoting it
            self.send_response(_FakeTts.status)
            self.end_headers()
            self.wfile.write(f"invalid key {self.headers.get('X-API-Key')}".encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.end_headers()
        self.wfile.write(b"ID3-fake-mp3")

    def log_message(self, *_: Any) -> None:
        pass


def test_voices_catalog_preview_and_clone(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    voices = org.client.voices.list().voices
    assert {"cartesia", "elevenlabs"} <= {v.provider for v in voices} and len(voices) >= 20
    sarah = org.client.voices.retrieve("694f9389-aac1-45b6-b726-9d9369183238", provider="cartesia").voice
    assert sarah.name == "Sarah"
    with pytest.raises(revox.NotFoundError):
        org.client.voices.retrieve("694f9389-aac1-45b6-b726-9d9369183238", provider="elevenlabs")
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(revox.InternalServerError) as missing:  # 501: the client's >=500 class
        org.client.voices.preview(provider="cartesia", voice_id=sarah.id)
    assert missing.value.status_code == 501 and "CARTESIA_API_KEY" in missing.value.body["error"]["message"]
    sent: list[httpx.Request] = []
    counting = httpx.Client(event_hooks={"request": [sent.append]})
    retrying = Revox(api_key=org.key, base_url=org.stack.url, max_retries=2, http_client=counting)
    with pytest.raises(revox.InternalServerError) as clone:
        retrying.voices.clone(audio="AAAA", content_type="audio/wav", language="en", name="Me")
    assert clone.value.status_code == 501
    assert len(sent) == 1  # final (`x-should-retry: false`): the client, retrying 5xx by default, did not

    fake = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTts)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    monkeypatch.setenv("CARTESIA_API_KEY", "sk_car_test")
    monkeypatch.setenv("CARTESIA_BASE_URL", f"http://127.0.0.1:{fake.server_address[1]}")
    try:
        audio = org.client.voices.with_raw_response.preview(
            provider="cartesia", voice_id=sarah.id, text="Bonjour"
        )
        assert audio.http_response.content == b"ID3-fake-mp3"
        path, headers, body = _FakeTts.requests[-1]
        assert path == "/tts/bytes" and headers["X-API-Key"] == "sk_car_test"
        assert body["voice"] == {"mode": "id", "id": sarah.id} and body["transcript"] == "Bonjour"
        # A voice id goes into the provider's URL with the operator's key: no other endpoint is reachable.
        monkeypatch.setenv("ELEVEN_API_KEY", "sk_el_test")
        monkeypatch.setenv("ELEVENLABS_BASE_URL", f"http://127.0.0.1:{fake.server_address[1]}")
        asked = len(_FakeTts.requests)
        with pytest.raises(revox.UnprocessableEntityError) as refused:
            org.client.voices.preview(provider="elevenlabs", voice_id="../../v1/user/subscription?x=")
        assert refused.value.body["error"]["details"][0]["loc"] == ["body", "voiceId"]
        assert len(_FakeTts.requests) == asked
        # A key the provider refuses is final (the client, retrying 5xx, would ask again in vain); a
        # provider that is busy (429) is worth asking again.
        for status, tries, said in (
            (401, 1, "cartesia answered 401 (check CARTESIA_API_KEY)"),
            (429, 3, "429"),
        ):
            _FakeTts.status, asked = status, len(_FakeTts.requests)
            with pytest.raises(revox.InternalServerError) as failed:
                retrying.voices.preview(provider="cartesia", voice_id=sarah.id)
            assert failed.value.status_code == 503 and said in failed.value.body["error"]["message"]
            assert len(_FakeTts.requests) - asked == tries
        # The operator's key is never the caller's to read: one read from a file (a trailing newline,
        # which no header may hold) is sent stripped; an answer quoting it is relayed without it.
        monkeypatch.setenv("CARTESIA_API_KEY", "sk_car_from_a_file\n")
        _FakeTts.status = 200
        org.client.voices.preview(provider="cartesia", voice_id=sarah.id)
        assert _FakeTts.requests[-1][1]["X-API-Key"] == "sk_car_from_a_file"
        _FakeTts.status = 400
        with pytest.raises(revox.UnprocessableEntityError) as quoted:
            org.client.voices.preview(provider="cartesia", voice_id=sarah.id)
        assert "sk_car" not in quoted.value.body["error"]["message"], quoted.value.body
    finally:
        _FakeTts.status = 200
        fake.shutdown()


def test_users_me_and_auth_status(stack: Stack, org: Org) -> None:
    user = org.client.users.retrieve().user
    assert user.organization_id == org.id and user.email == f"owner@{org.id}.test"
    assert org.client.auth_status.retrieve().authenticated is True
    stranger = Revox(api_key="odk_unknown", base_url=stack.url, max_retries=0)
    assert stranger.auth_status.retrieve().authenticated is False
    with pytest.raises(revox.AuthenticationError):
        stranger.users.retrieve()
    docs = httpx.get(f"{stack.url}/docs")
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    assert docs.status_code == 200 and "/call/{id}/cancel" in schema["paths"]


def test_a_do_not_contact_number_is_refused_at_once_unless_overridden(stack: Stack, org: Org) -> None:
    number = "+33698765400"
    with stack.database.session() as session:
        session.add(
            DoNotContactRecord(
                organization_id=org.id, phone_number=number, call_id="c-earlier", recorded_at=utcnow()
            )
        )
        session.commit()
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        org.client.call.create(phone_number=number, metadata={"simulation": "human"})
    error = refused.value.body["error"]
    assert error["details"][0]["loc"] == ["body", "phone_number"]
    assert "asked not to be contacted again (call c-earlier" in error["message"]
    with pytest.raises(revox.UnprocessableEntityError, match="asked not to be contacted"):  # trunk 0 kept
        org.client.call.create(phone_number="+330698765400", metadata={"simulation": "human"})
    overridden = org.client.call.create(
        phone_number=number, metadata={"simulation": "human", "do_not_contact_override": "true"}
    ).call
    assert overridden.to_phone_number == number
    other = new_org(stack).client.call.create(phone_number=number, metadata={"simulation": "human"}).call
    assert other.to_phone_number == number  # the registry is per organization
    written = new_org(stack).client.call.create(
        phone_number="+330698765400", metadata={"simulation": "human"}
    )
    assert written.call.to_phone_number == number  # as E.164 writes it


def test_an_order_whose_placeholder_row_failed_is_answered_and_stored_by_its_workflow(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an Idempotency-Key the placeholder is written while the workflow starts: if that write
    fails, the started order is still answered, and it appears once its workflow stores it (its first
    step)."""

    def failing_insert(database: Database, placeholder: dict[str, Any]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "insert_call", failing_insert)
    call = org.client.call.create(**quick_order("human:interested")).call
    monkeypatch.undo()
    assert call.status == "initializing"
    eventually_sync(lambda: org.client.call.search(**no_filters()).calls, lambda found: len(found) == 1)
    assert finished(org.client, call.id).status == "completed"
    listed = org.client.call.search(**no_filters()).calls
    assert [c.id for c in listed] == [call.id]


def test_an_order_that_could_not_start_leaves_no_row(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start failed and Temporal has no such workflow: a 503 (safe to retry) and no row."""

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(Client, "start_workflow", unavailable)
    with pytest.raises(revox.InternalServerError) as failed:
        org.client.call.create(**quick_order("human:interested"))
    monkeypatch.undo()
    assert failed.value.status_code == 503
    assert "could not start the call order: connection refused" in str(failed.value)
    assert org.client.call.search(**no_filters()).calls == []


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "Idempotency-Key"])
def test_a_start_whose_answer_was_lost_is_answered_as_started(
    org: Org, monkeypatch: pytest.MonkeyPatch, keyed: bool
) -> None:
    """Temporal took the start but its answer never came (a timeout): the workflow is there, so the
    order is answered as started, not a 503 that the client would retry into a second call."""
    start_workflow = Client.start_workflow
    started: list[str] = []

    async def answer_lost(self: Client, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        handle = await start_workflow(self, workflow, *args, **kwargs)
        if workflow != "CallOrderWorkflow":  # a semaphore another test's order still asks for
            return handle
        started.append(kwargs["id"])
        raise RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    monkeypatch.setattr(Client, "start_workflow", answer_lost)
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else None
    call = org.client.call.create(**quick_order("human:interested"), extra_headers=headers).call
    monkeypatch.undo()
    assert started == [order_workflow_id(call.id)]
    assert call.status == "initializing"
    assert finished(org.client, call.id).status == "completed"
    assert [c.id for c in org.client.call.search(**no_filters()).calls] == [call.id]


def temporal_down_midway_a_start(monkeypatch: pytest.MonkeyPatch, reached: bool) -> list[str]:
    """Temporal goes down while an order starts (having taken the start if `reached`), so the start
    fails and the ask whether it started too. Returns the workflow ids whose start was attempted."""
    start_workflow = Client.start_workflow
    attempted: list[str] = []

    async def down_midway(self: Client, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        if workflow != "CallOrderWorkflow":  # a semaphore another test's order still asks for
            return await start_workflow(self, workflow, *args, **kwargs)
        attempted.append(kwargs["id"])
        if reached:
            await start_workflow(self, workflow, *args, **kwargs)
        raise RPCError("connection reset", RPCStatusCode.UNAVAILABLE, b"")

    async def cannot_say(*args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(Client, "start_workflow", down_midway)
    monkeypatch.setattr(WorkflowService, "describe_workflow_execution", cannot_say)
    return attempted


@pytest.mark.parametrize("how", ["stalled", "unreachable"])
def test_a_start_temporal_does_not_answer_is_answered_before_the_clients_timeout(
    org: Org, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Temporal stalls (a try waits out its deadline) or cannot be reached (the SDK retries for ~10 s,
    past any deadline a try has): the official client, with a shorter timeout, gave up and retried,
    each retry a second order. The start and the ask whether it took it now fit in the timeout the
    client says it has (`x-stainless-read-timeout`), a second to spare (10 s and 2 s at most), and the
    start is answered as one Temporal cannot account for: a 503 the client does not retry, one order."""
    start_workflow = Client.start_workflow
    deadlines: list[timedelta] = []

    async def no_answer(deadline: timedelta | None) -> None:
        deadlines.append(deadline or timedelta(seconds=30))
        await asyncio.sleep(deadlines[-1].total_seconds() if how == "stalled" else 30)
        raise RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    async def starting(self: Client, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        if workflow != "CallOrderWorkflow":  # a semaphore another test's order still asks for
            return await start_workflow(self, workflow, *args, **kwargs)
        await no_answer(kwargs.get("rpc_timeout"))

    async def asking(self: Any, request: Any, *, timeout: timedelta | None = None, **kwargs: Any) -> None:
        await no_answer(timeout)

    monkeypatch.setattr(Client, "start_workflow", starting)
    monkeypatch.setattr(WorkflowService, "describe_workflow_execution", asking)
    impatient = Revox(api_key=org.key, base_url=org.stack.url, timeout=4, max_retries=2)
    with pytest.raises(revox.InternalServerError) as failed:
        impatient.call.create(**quick_order("human:interested"))
    monkeypatch.undo()
    assert deadlines[0] == timedelta(seconds=1.5)  # 4 s less a second, shared with the ask and the database
    assert len(deadlines) <= 2 and failed.value.response.headers["x-should-retry"] == "false"
    assert len(org.client.call.search(**no_filters()).calls) == 1


def test_a_database_that_does_not_answer_is_answered_before_the_clients_timeout(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled PostgreSQL (or a SQLite file another process holds locked) held `POST /call` past the
    official client's timeout: it retried, and once the database answered each try had placed an order.
    Before the start, the database has its part of the client's patience, then a 503 with nothing placed;
    after it, the answer goes without the placeholder row (the workflow writes the order's own)."""
    released = threading.Event()
    get_call_by_key, insert_call = store.get_call_by_key, store.insert_call

    def stalled_read(*args: Any) -> Any:
        released.wait(30)
        return get_call_by_key(*args)

    def locked_write(*args: Any) -> Any:
        released.wait(30)
        return insert_call(*args)

    impatient = Revox(api_key=org.key, base_url=org.stack.url, timeout=4, max_retries=2)
    monkeypatch.setattr(store, "get_call_by_key", stalled_read)
    before = time.monotonic()
    with pytest.raises(revox.InternalServerError, match="the database did not answer within 0.6 s"):
        impatient.call.create(
            **quick_order("human:interested"), extra_headers={"Idempotency-Key": "k-stalled"}
        )
    assert time.monotonic() - before < 4 * 3  # each try answered within the client's 4 s
    monkeypatch.setattr(store, "insert_call", locked_write)
    before = time.monotonic()
    placed = impatient.call.create(**quick_order("human:interested", to="+33612345679")).call
    assert time.monotonic() - before < 4  # not retried: one order
    released.set()
    monkeypatch.undo()
    calls_ = eventually_sync(
        lambda: org.client.call.search(**no_filters()).calls,
        lambda found: len(found) == 1 and found[0].status == "completed",
        timeout=30,
    )
    assert [call.id for call in calls_] == [placed.id]


def test_a_call_whose_row_is_not_written_yet_is_read_and_steered_from_its_workflow(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database locked or slow, `POST /call` answers without its placeholder row, and the workflow
    writes the row once it can: meanwhile the call just accepted was a 404 to GET and to cancel."""
    placed = org.client.call.create(
        **quick_order("human:interested", skip_calling_window=False),
        scheduled_at=datetime.now(UTC) + timedelta(hours=1),
    ).call
    get_call = store.get_call
    monkeypatch.setattr(store, "get_call", lambda database, organization_id, call_id: None)  # no row
    eventually_sync(lambda: org.client.call.retrieve(placed.id).call.status, lambda s: s == "scheduled")
    with pytest.raises(revox.NotFoundError):  # another organization's: not found, as ever
        new_org(org.stack).client.call.retrieve(placed.id)
    assert org.client.call.cancel(placed.id).success
    monkeypatch.setattr(store, "get_call", get_call)
    eventually_sync(lambda: org.client.call.retrieve(placed.id).call.status, lambda s: s == "cancelled")


def test_a_client_that_leaves_before_its_whole_body_is_no_error(
    org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    """It was logged as an unexpected error, a 70-line traceback, and again by the server."""
    caplog.set_level(logging.INFO)
    url = httpx.URL(org.stack.url)
    with socket.create_connection((url.host, url.port)) as connection:
        connection.sendall(
            b"POST /call HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer "
            + org.key.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"phone_number"'
        )
    deadline = time.monotonic() + 10
    while not any("disconnected before sending its body" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("said", ["0.3", "1", "1.5", "2", "4", "13", "60"])
def test_the_start_and_the_ask_fit_in_the_timeout_the_client_says_it_has(said: str) -> None:
    patience = calls.patience_for(SimpleNamespace(headers={"x-stainless-read-timeout": said}))  # type: ignore[arg-type]
    spent = patience.total  # the start, the ask whether it took, the database's steps
    assert 0 < spent <= float(said) - min(1.0, float(said) / 3) + 1e-5 and spent <= 15  # (to the µs)
    for header in ({}, {"x-stainless-read-timeout": "soon"}, {"x-stainless-read-timeout": "nan"}):
        assert calls.patience_for(SimpleNamespace(headers=header)) == calls.PATIENCE  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["cut short", "connection lost"])
async def test_a_signal_whose_start_failed_is_not_taken_as_delivered(
    dev_env: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Steering a kept order starts it with the signal; cut short by the API's patience or failed, that
    start is not "started" because the order's workflow is there (its own first start may have landed late):
    a plain start proves nothing of a signal, so it is a 503 to retry, and the retry finds the order."""
    call_id, queue = str(uuid.uuid4()), f"nobody-{uuid.uuid4()}"
    params = CallCreateParams.model_validate(quick_order("human:interested"))
    first = await dev_env.client.start_workflow(
        "CallOrderWorkflow", params, id=f"call-{call_id}", task_queue=queue
    )

    async def hanging(self: Client, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        if how == "connection lost":
            raise RPCError("connection reset by peer", RPCStatusCode.UNAVAILABLE, b"")
        await asyncio.sleep(30)

    monkeypatch.setattr(Client, "start_workflow", hanging)
    context = SimpleNamespace(
        temporal=AsyncMock(return_value=dev_env.client), settings=SimpleNamespace(task_queue=queue)
    )
    short = calls.Patience(start=timedelta(seconds=0.3), ask=timedelta(seconds=0.3))
    with pytest.raises(calls.StartUnknown):
        await calls._start(context, call_id, "org_x", params, None, "cancel", short)  # type: ignore[arg-type]
    await first.terminate("done")


def test_a_start_temporal_took_but_answered_late_is_answered_as_started(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the time the client leaves it, the start is asked after: Temporal has it, so the call is
    placed (it was answered "may yet run", a 503, for a call that was running)."""
    start_workflow = Client.start_workflow

    async def late(self: Client, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        handle = await start_workflow(self, workflow, *args, **kwargs)
        if workflow == "CallOrderWorkflow":
            await asyncio.sleep(30)  # its answer lost on the way (cut short by the API's patience)
        return handle

    monkeypatch.setattr(Client, "start_workflow", late)
    impatient = Revox(api_key=org.key, base_url=org.stack.url, timeout=4, max_retries=0)
    placed = impatient.call.create(**quick_order("human:interested")).call
    monkeypatch.undo()
    assert finished(org.client, placed.id).status == "completed"
    assert [c.id for c in org.client.call.search(**no_filters()).calls] == [placed.id]


@pytest.mark.parametrize("reached", [False, True], ids=["start lost", "answer lost"])
@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "Idempotency-Key"])
def test_a_start_temporal_cannot_account_for_is_never_placed_twice(
    org: Org, monkeypatch: pytest.MonkeyPatch, reached: bool, keyed: bool
) -> None:
    """The start failed and Temporal, down, cannot say whether it took it: a 503 either way, and the
    order is kept, listed. Without a key, the official client (retrying as it does by default) is told
    not to retry: the order may have started. With a key, the key stays claimed, so the retry with it is
    this order (started then, or found started), never a second one."""
    attempted = temporal_down_midway_a_start(monkeypatch, reached)
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else None
    retrying = Revox(api_key=org.key, base_url=org.stack.url, max_retries=2 if not keyed else 0)
    with pytest.raises(revox.InternalServerError) as failed:
        retrying.call.create(**quick_order("human:interested"), extra_headers=headers)
    monkeypatch.undo()
    assert failed.value.status_code == 503
    assert "Temporal could not say if it started" in str(failed.value)
    [workflow_id] = attempted  # the client did not retry
    call_id = workflow_id.removeprefix(ORDER_WORKFLOW_PREFIX)
    assert [c.id for c in org.client.call.search(**no_filters()).calls] == [call_id]
    if keyed:
        assert "x-should-retry" not in failed.value.response.headers  # a retry is safe
        call = org.client.call.create(**quick_order("human:interested"), extra_headers=headers).call
        assert call.id == call_id
    else:
        assert failed.value.response.headers["x-should-retry"] == "false"
        assert f"call {call_id} may yet run: cancel it, or resume it to place it" in str(failed.value)
    if keyed or reached:  # placed by the retry with the key, or by the start whose answer was lost
        assert finished(org.client, call_id).status == "completed"
    else:  # never started: it waits to be steered
        assert org.client.call.retrieve(call_id).call.status == "initializing"
    assert [c.id for c in org.client.call.search(**no_filters()).calls] == [call_id]


@pytest.mark.parametrize(
    ("signal", "status", "calls"), [("cancel", "cancelled", 0), ("resume", "completed", 1)]
)
@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "Idempotency-Key"])
def test_an_order_whose_start_failed_unaccounted_is_steered_all_the_same(
    org: Org, monkeypatch: pytest.MonkeyPatch, keyed: bool, signal: str, status: str, calls: int
) -> None:
    """Its start failed, Temporal could not say, and no retry with its key came: the order's workflow
    never started. Steering it starts it with the signal, so a cancel ends it before any call and a
    resume places it (not a 409 "ended" for a call listed as initializing)."""
    attempted = temporal_down_midway_a_start(monkeypatch, reached=False)
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else None
    with pytest.raises(revox.InternalServerError):
        org.client.call.create(**quick_order("human:interested"), extra_headers=headers)
    monkeypatch.undo()
    [call] = org.client.call.search(**no_filters()).calls
    assert (order_workflow_id(call.id), call.status) == (attempted[0], "initializing")
    getattr(org.client.call, signal)(call.id)
    ended = finished(org.client, call.id)
    assert (ended.status, ended.calls_count) == (status, calls)
    assert [c.id for c in org.client.call.search(**no_filters()).calls] == [call.id]


def test_an_order_started_but_not_answerable_is_withdrawn(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Call is built while the workflow starts: if building it fails (a bug), the request is a 500
    and the order it started is terminated, so a failed POST /call still places no call."""
    started: list[str] = []

    def broken(call_id: str, *args: Any) -> Call:
        started.append(call_id)
        raise RuntimeError("a bug building the Call")

    monkeypatch.setattr(calls, "initial_call", broken)
    with pytest.raises(revox.InternalServerError):
        org.client.call.create(**quick_order("human:interested"))
    monkeypatch.undo()
    [call_id] = started

    async def status() -> WorkflowExecutionStatus | None:
        settings = org.stack.settings
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        return (await client.get_workflow_handle(order_workflow_id(call_id)).describe()).status

    assert asyncio.run(status()) == WorkflowExecutionStatus.TERMINATED


def test_a_key_works_the_moment_it_is_issued_and_revocation_is_listed(stack: Stack, org: Org) -> None:
    """Only verified keys are remembered (for 30 s): a key refused a moment ago works once issued."""
    key = "odk_" + uuid.uuid4().hex
    client = Revox(api_key=key, base_url=stack.url, max_retries=0)
    with pytest.raises(revox.AuthenticationError):
        client.users.retrieve()
    issue_api_key(stack.database, org.id, name="late", key=key)
    assert client.users.retrieve().user.organization_id == org.id
    [mine] = [k for k in api_keys_of(stack.database, org.id) if k.name == "late"]
    assert mine.prefix == key[:12] and mine.revoked_at is None
    assert revoke_api_key(stack.database, org.id, mine.id) is not None
    assert revoke_api_key(stack.database, "org_someone_else", mine.id) is None
    assert client.auth_status.retrieve().authenticated is False  # auth-status always asks the database
    [revoked] = [k for k in api_keys_of(stack.database, org.id) if k.name == "late"]
    assert revoked.revoked_at is not None


# --- search, export, phone history ------------------------------------------------------------------------


def no_filters(**given: Any) -> dict[str, Any]:
    """The client's search/export filters require every list; empty means "any"."""
    base: dict[str, Any] = {
        key: []
        for key in (
            "assignee_ids",
            "assistant_ids",
            "campaign_ids",
            "directions",
            "from_phone_numbers",
            "outcomes",
            "results",
            "statuses",
        )
    }
    return {**base, "page": 1, "page_size": 50, **given}


def test_search_export_and_phone_history_work_after_the_workflows_are_gone(stack: Stack) -> None:
    org = new_org(stack)
    ids = {
        "interested": org.client.call.create(**quick_order("human:interested", to="+33612340001")).call.id,
        "no_answer": org.client.call.create(
            **quick_order("no_answer", to="+33612340002", attempts=2)
        ).call.id,
        "dnc": org.client.call.create(
            **quick_order("voicemail,human:do_not_contact", to="+33612340003", attempts=2)
        ).call.id,
    }
    waiting = org.client.call.create(phone_number="+33612340004", scheduled_at="2099-01-05T09:00:00Z").call.id
    for call_id in ids.values():
        finished(org.client, call_id)
    eventually_sync(lambda: org.client.call.retrieve(waiting).call.status, lambda s: s == "scheduled")

    # Beyond Temporal's retention: an API whose Temporal has none of these workflows (none at all,
    # here) still answers everything below from the database.
    cut_off = stack.settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    with StackThread(cut_off, worker=False) as alone:
        client = Revox(api_key=org.key, base_url=alone.url, max_retries=0)
        assert client.call.retrieve(ids["interested"]).call.outcome == "interested"
        assert client.call.retrieve(waiting).call.status == "scheduled"  # running: the stored state
        check_search_export_history(client, ids, waiting)
    org.client.call.cancel(waiting)


def test_an_export_past_its_limit_is_refused_naming_the_filters(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export was cut at its limit without a word, its CSV looking complete."""
    placed = [
        org.client.call.create(phone_number="+33612345678", scheduled_at="2099-01-05T09:00:00Z").call.id
        for _ in range(3)
    ]
    monkeypatch.setattr(store, "EXPORT_LIMIT", 2)
    with pytest.raises(revox.UnprocessableEntityError, match="3 calls match; an export holds at most 2"):
        org.client.call.export(filters=no_filters())
    narrowed = org.client.call.export(filters=no_filters(call_ids=placed[:2]))
    assert len(list(csv.DictReader(io.StringIO(narrowed.csv)))) == 2
    for call_id in placed:
        org.client.call.cancel(call_id)


def check_search_export_history(client: Revox, ids: dict[str, str], waiting: str) -> None:
    search = client.call.search
    assert search(**no_filters()).total_count == 4
    assert {c.id for c in search(**no_filters(statuses=["completed"])).calls} == set(ids.values())
    assert [c.id for c in search(**no_filters(outcomes=["interested"])).calls] == [ids["interested"]]
    assert {c.id for c in search(**no_filters(outcomes=["none"])).calls} == {ids["no_answer"], waiting}
    assert [c.id for c in search(**no_filters(results=["human"], outcomes=["do_not_contact"])).calls] == [
        ids["dnc"]
    ]
    assert [c.id for c in search(**no_filters(to_phone_number="+33612340002")).calls] == [ids["no_answer"]]
    assert [c.id for c in search(**no_filters(query="33612340004")).calls] == [waiting]
    # The free-text query reads the calls' values: variables, metadata, what was said; no key names.
    assert {c.id for c in search(**no_filters(query="CLAIRE")).calls} == set(ids.values())
    # (a value no call id can hold: "c-42" is in about one random UUID in a thousand)
    assert {c.id for c in search(**no_filters(query="crm-42")).calls} == set(ids.values())
    assert [c.id for c in search(**no_filters(query="send me the details")).calls] == [ids["interested"]]
    assert search(**no_filters(query="prompt_variables")).total_count == 0
    assert search(**no_filters(query="100%_")).total_count == 0  # LIKE's wildcards are plain text
    assert search(**no_filters(campaign_ids=["any"])).total_count == 0
    pages = [
        search(**no_filters(page=p, page_size=3, sort_by="to_phone_number", sort_direction="asc"))
        for p in (1, 2)
    ]
    assert [c.to_phone_number for page in pages for c in page.calls] == [
        f"+3361234000{i}" for i in (1, 2, 3, 4)
    ]
    assert pages[0].total_count == 4 and len(pages[1].calls) == 1

    export = client.call.export(
        filters=no_filters(statuses=["completed"]),
        include_metadata=True,
        include_structured_output_fields=True,
    )
    assert export.filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(export.csv)))
    assert sorted(
        (r["to_phone_number"], r["attempt_number"], r["result"] or r["dial_error"]) for r in rows
    ) == [
        ("+33612340001", "1", "human"),
        ("+33612340002", "1", "no_answer"),
        ("+33612340002", "2", "no_answer"),
        ("+33612340003", "1", "voicemail"),
        ("+33612340003", "2", "human"),
    ]
    interested = next(r for r in rows if r["to_phone_number"] == "+33612340001")
    assert interested["outcome"] == "interested" and interested["metadata.crm_id"] == "crm-42"
    summary = client.call.retrieve(ids["interested"]).call.outcome_summary
    assert summary and interested["outcome_summary"] == summary
    assert interested["structured_output.name"] == "Claire" and interested["transcript"].startswith(
        "assistant: Hi"
    )

    history = client.call.phone_history().phone_history
    assert history["+33612340001"].hot and history["+33612340001"].reached_human
    assert history["+33612340001"].last_outcome == "interested" and history["+33612340001"].count == 1
    assert history["+33612340002"].count == 2 and not history["+33612340002"].reached_human
    assert history["+33612340003"].do_not_contact and history["+33612340003"].last_called_at
    assert history["+33612340004"].count == 0 and history["+33612340004"].last_called_at is None


def test_a_misspelt_key_in_any_write_is_a_422_naming_it_not_dropped(org: Org) -> None:
    """A launch with `rows.call_id` (for `call_ids`) called the row it excluded, `schedule_at` launched at
    once; `assistant.webhok_url` gave no webhook; a PATCH with `phone_number` answered 200 and changed
    nothing: every write body refuses a key it does not know, as `POST /call` did at its top."""
    assistant = org.client.assistants.create(name="Strict", prompt="Hello").assistant
    campaign = org.client.campaigns.create(
        name="Strict",
        assistant_id=assistant.id,
        contacts=[{"to_phone_number": "+33612345601", "prompt_variables": {}}],
    ).campaign
    launch, hook = f"/campaigns/{campaign.id}/launch-calls", "https://example.com/h"
    with org.raw() as http:
        created = http.post("/phone-numbers", json={"phone_number": "+33159000077"})
        number = created.json()["phone_number"]["id"]
        writes = [
            ("POST", "/call", {"phone_number": "+33612345678", "assistant": {"prompt": "", "webhok_url": 1}}),
            ("POST", "/assistants", {"name": "A", "prompt": "Hi", "webhok_url": hook}),
            ("PATCH", f"/assistants/{assistant.id}", {"webhok_url": hook}),
            ("POST", "/campaigns", {"name": "C", "assistant_id": assistant.id, "contacts": [
                {"to_phone_number": "+33612345602", "name": "Claire"}]}),
            ("PATCH", f"/campaigns/{campaign.id}", {"max_concurent_calls": 7}),
            ("POST", launch, {"mode": "ai_first", "selection": {
                "filters": {}, "rows": {"mode": "all_except", "call_id": ["x"]}}}),
            ("POST", launch, {"mode": "ai_first", "schedule_at": "2099-01-05"}),
            ("PATCH", f"/phone-numbers/{number}", {"phone_number": "+33159000078"}),
        ]  # fmt: skip
        for method, path, body in writes:
            refused = http.request(method, path, json=body)
            assert refused.status_code == 422, (path, body, refused.text)
            [detail] = refused.json()["error"]["details"]
            assert detail["msg"] == "Extra inputs are not permitted", (path, detail)
        renamed = http.patch(f"/campaigns/{campaign.id}", json={"name": None})  # it answered 200, unchanged
        assert renamed.status_code == 422 and renamed.json()["error"]["details"][0]["loc"] == ["body", "name"]
    assert org.client.campaigns.retrieve(campaign.id).campaign.row_stats.not_launched == 1  # never launched


def test_a_stored_assistants_deleted_caller_id_is_named_where_it_was_said(org: Org) -> None:
    """Its number deleted since: `POST /call` by `assistant_id` blamed `assistant.from_phone_number`, a
    field the request did not have, and a clone was made of it (creating one is refused). A search by
    the assistant's id in capitals found none of its calls."""
    with org.raw() as http:
        number = http.post("/phone-numbers", json={"phone_number": "+33159000088"}).json()["phone_number"]
        stored = org.client.assistants.create(name="Caller", prompt="Hi", from_phone_number="+33159000088")
        placed = org.client.call.create(
            phone_number="+33612345678", assistant_id=stored.assistant.id, scheduled_at="2099-01-05T09:00:00Z"
        ).call
        found = org.client.call.search(**no_filters(assistant_ids=[stored.assistant.id.upper()]))
        assert [call.id for call in found.calls] == [placed.id]
        assert http.delete(f"/phone-numbers/{number['id']}").status_code == 200
        refused = http.post(
            "/call", json={"phone_number": "+33612345678", "assistant_id": stored.assistant.id}
        )
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["loc"] == [
            "body",
            "assistant_id",
        ]
        cloned = http.post(f"/assistants/{stored.assistant.id}/clone")
        assert cloned.status_code == 422 and "from_phone_number" in cloned.text, cloned.text
    long = org.client.assistants.create(name="N" * 200, prompt="Hi").assistant
    assert org.client.assistants.clone(long.id).assistant.name == "N" * 193 + " (Copy)"  # the suffix kept
    org.client.call.cancel(placed.id)

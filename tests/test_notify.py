"""Notifications after the order: signed webhooks delivered once (to a deduplicating receiver), outcome
emails through SMTP, SMS through Twilio's REST API or the simulated outbox, the URL guard, and the
do-not-contact memory. Every server is local (127.0.0.1) and speaks the real protocol."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.compliance import (
    DO_NOT_CONTACT,
    ComplianceActivities,
    ContactCheckRequest,
    DoNotContactEntry,
    InMemoryDoNotContactRegistry,
    RememberRequest,
)
from activities.notify import (
    SIGNATURE_HEADER,
    NotifyActivities,
    NotifyRequest,
    due_channels,
    event_id,
    sign,
    verify_signature,
)
from activities.slack import SlackMessage, SlackWebApi, slack_text
from activities.sms import MAX_SMS_CHARS, SimulatedSmsOutbox, SmsMessage, TemplateSmsWriter, TwilioSms
from activities.url_guard import UnsafeUrlError, check_url, guarded_client, unsafe_reason
from agent.config import AgentConfig
from models import CallCreateParams
from models.secrets import masked
from tests.helpers import eventually, settings_for_tests
from tests.http_fakes import final_call, serve
from workers import create_worker
from workers.http_logs import CHATTY_HTTP_LOGGERS
from workers.mailsink import MailSink, start_mail_sink
from workflows.call_order import CallOrderWorkflow
from workflows.notify import NotificationsReport, notifications_workflow_id

SECRET = "whsec_test_0123456789abcdef"
TOOL_TOKEN = "Bearer tool-secret-0123456789"
LLM_KEY = "sk-custom-secret-0123456789"


def activities(
    contacts: InMemoryDoNotContactRegistry | None = None, **settings: Any
) -> tuple[NotifyActivities, SimulatedSmsOutbox]:
    outbox = SimulatedSmsOutbox()
    config = settings_for_tests(**{"webhook_secret": SECRET, "allow_private_urls": True, **settings})
    contacts = contacts or InMemoryDoNotContactRegistry()
    return NotifyActivities(config, outbox, TemplateSmsWriter(), contacts=contacts), outbox


class Receiver:
    """A webhook receiver that deduplicates by event id, as receivers should. The first `fail_first`
    deliveries fail: the very first after it has stored the event (it crashed before answering)."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.fail_first = fail_first
        self.status = status
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.accepted: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/outdial", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.deliveries.append((dict(request.headers), body))
        if not verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
            return web.Response(status=400, text="bad signature")
        event = json.loads(body)
        if len(self.deliveries) == 1:
            self.accepted.setdefault(event["id"], event)
        if len(self.deliveries) <= self.fail_first:
            return web.Response(status=self.status)
        self.accepted.setdefault(event["id"], event)
        return web.Response(status=204)


# --- signing ----------------------------------------------------------------------------------------


def test_signature_verifies_only_the_exact_body_secret_and_recent_timestamp() -> None:
    body = b'{"event":"call.completed"}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature("whsec_other", header, body)
    assert not verify_signature(SECRET, sign(SECRET, body, now - 301), body)  # replayed later
    assert not verify_signature(SECRET, "v1=abc", body)


# --- what is due ------------------------------------------------------------------------------------


def test_due_channels_follow_the_assistant_and_the_outcome() -> None:
    everything = {
        "webhook_url": "https://hooks.example.com/x",
        "email_notification_address": "sales@example.com",
        "email_notification_outcomes": ["interested"],
        "after_call_sms_prompt": "Thank them.",
        "voicemail_sms_prompt": "Sorry we missed you.",
    }
    assert due_channels(final_call(**everything)) == ["webhook", "email", "after_call_sms"]
    assert due_channels(final_call(outcome="completed", **everything)) == ["webhook", "after_call_sms"]
    voicemails = final_call(outcome=None, results=("voicemail", "voicemail"), **everything)
    assert due_channels(voicemails) == ["webhook", "voicemail_sms"]
    # Never text someone who asked not to be contacted, nor after a cancelled order.
    blocked = final_call(outcome="do_not_contact", **everything)
    assert due_channels(blocked) == ["webhook"]
    assert due_channels(final_call(status="cancelled", outcome=None, **everything)) == ["webhook"]
    assert due_channels(final_call(status="calling", **everything)) == []  # not over yet
    assert due_channels(final_call()) == []


def test_the_official_clients_outcome_lists_narrow_the_email_and_the_after_call_sms() -> None:
    """after_call_sms_outcomes (revox 0.5.0): the SMS only for those outcomes, "none" for a call
    without one; left out, any outcome (the seed's behaviour). "none" in email_notification_outcomes
    likewise mails a call that ended without an outcome."""
    texts = {"after_call_sms_prompt": "Thank them.", "after_call_sms_outcomes": ["interested"]}
    assert due_channels(final_call(outcome="interested", **texts)) == ["after_call_sms"]
    assert due_channels(final_call(outcome="not_interested", **texts)) == []
    assert due_channels(final_call(outcome="not_interested", after_call_sms_prompt="Thank them.")) == [
        "after_call_sms"
    ]
    unknown = {"after_call_sms_prompt": "Thank them.", "after_call_sms_outcomes": ["none"]}
    assert due_channels(final_call(outcome=None, **unknown)) == ["after_call_sms"]
    assert due_channels(final_call(outcome="interested", **unknown)) == []
    assert due_channels(final_call(after_call_sms_prompt="Thank them.", after_call_sms_outcomes=[])) == []
    mail = {"email_notification_address": "a@x.com,b@y.com", "email_notification_outcomes": ["none"]}
    assert due_channels(final_call(outcome=None, **mail)) == ["email"]
    assert due_channels(final_call(outcome="interested", **mail)) == []


# --- webhooks ---------------------------------------------------------------------------------------


def webhook_order(base: str) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {"prompt": "Offer a demo.", "webhook_url": f"{base}/hooks/outdial"},
            "force_now": True,
            "metadata": {"simulation": "human:interested"},
        }
    )


async def test_receiver_failing_3_times_accepts_one_signed_event_after_backoff(time_env, task_queue) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(fail_first=3)
    settings = settings_for_tests(webhook_secret=SECRET, allow_private_urls=True)
    call_id = str(uuid.uuid4())
    async with (
        serve(receiver.routes) as base,
        create_worker(time_env.client, task_queue=task_queue, settings=settings),
    ):
        call = await time_env.client.execute_workflow(
            CallOrderWorkflow.run, webhook_order(base), id=f"call-{call_id}", task_queue=task_queue
        )
        # The order started its notifications as an abandoned child; a handle from get_workflow_handle
        # does not skip time by itself, so jump the clock past the backoff (10 + 20 + 40 s) first.
        await time_env.sleep(timedelta(seconds=80))
        notify = time_env.client.get_workflow_handle(
            notifications_workflow_id(call_id), result_type=NotificationsReport
        )
        report = await notify.result()
        described = await notify.describe()

    assert call.status == "completed" and call.outcome == "interested"
    [result] = report.results
    assert (result.channel, result.status, result.detail) == ("webhook", "sent", "HTTP 204 on attempt 4")
    # Temporal's retry policy spaced the deliveries: 10 s + 20 s + 40 s of backoff, on workflow time.
    assert described.close_time and described.close_time - described.start_time >= timedelta(seconds=70)
    # At-least-once, deduplicated: 4 deliveries, one event, the same id and bytes every time, all signed.
    assert len(receiver.deliveries) == 4
    assert [h["Outdial-Delivery-Attempt"] for h, _ in receiver.deliveries] == ["1", "2", "3", "4"]
    assert len({body for _, body in receiver.deliveries}) == 1
    assert all(verify_signature(SECRET, h[SIGNATURE_HEADER], body) for h, body in receiver.deliveries)
    [(id_, event)] = receiver.accepted.items()
    assert id_ == f"{call_id}:call.completed" == event_id(call)
    assert event["event"] == "call.completed"
    # the seed's Call as the order ended, its secrets masked (the webhook's own path: `…`)
    assert event["call"] == masked(call.model_dump(mode="json"))
    assert event["call"]["assistant"]["webhook_url"].endswith("/…")


async def test_dead_receiver_never_holds_the_order(dev_env, task_queue) -> None:  # type: ignore[no-untyped-def]
    """The real dev server: the order returns at once while its webhook keeps retrying elsewhere."""
    receiver = Receiver(fail_first=1_000)
    settings = settings_for_tests(webhook_secret=SECRET, allow_private_urls=True)
    call_id = str(uuid.uuid4())
    async with (
        serve(receiver.routes) as base,
        create_worker(dev_env.client, task_queue=task_queue, settings=settings),
    ):
        began = time.monotonic()
        call = await dev_env.client.execute_workflow(
            CallOrderWorkflow.run, webhook_order(base), id=f"call-{call_id}", task_queue=task_queue
        )
        took = time.monotonic() - began
        notify = dev_env.client.get_workflow_handle(notifications_workflow_id(call_id))
        await eventually(lambda: _count(receiver), lambda n: n >= 1)
        running = (await notify.describe()).status
        await notify.terminate("test over")
    assert call.status == "completed" and took < 10
    assert running == WorkflowExecutionStatus.RUNNING  # still retrying the dead receiver, on its own


async def _count(receiver: Receiver) -> int:
    return len(receiver.deliveries)


async def test_webhook_masks_secrets_of_the_assistant_in_the_body() -> None:
    receiver = Receiver()
    async with serve(receiver.routes) as base:
        call = final_call(
            webhook_url=f"{base}/hooks/outdial",
            llm_model={
                "type": "custom",
                "api_url": "https://llm.example.com/v1",
                "api_key": LLM_KEY,
                "model_name": "m",
            },
            custom_tools=[
                {
                    "name": "crm",
                    "description": "CRM",
                    "method": "GET",
                    "url": "https://crm.example.com",
                    "headers": [{"key": "Authorization", "value": TOOL_TOKEN}],
                    "query_params": [],
                    "input_schema": [],
                }
            ],
        )
        acts, _ = activities()
        result = await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    assert result.status == "sent"
    [(_, body)] = receiver.deliveries
    assert LLM_KEY.encode() not in body and TOOL_TOKEN.encode() not in body
    assert json.loads(body)["call"]["llm_model"]["api_key"] == "…6789"
    sent = json.loads(body)["call"]["assistant"]
    assert sent["llm_model"]["api_key"] == "…6789"
    assert sent["custom_tools"][0]["headers"][0]["value"] == "…6789"


async def test_a_webhook_carries_the_callers_own_data_as_given_whatever_its_keys() -> None:
    """Masking went by key name: an extracted field named `url`, metadata named `headers`, a prompt
    variable named `url` reached the receiver masked, though `GET /call` gives them whole."""
    receiver = Receiver()
    async with serve(receiver.routes) as base:
        call = final_call(webhook_url=f"{base}/hooks/outdial")
        last = call.call_attempts[0].model_copy(
            update={
                "structured_output": {"url": "https://shop.example/cart?item=SKU-998877", "api_key": "Alex"}
            }
        )
        call = call.model_copy(
            update={
                "metadata": {"url": "https://crm.example/leads/42?tab=notes", "headers": "Lead from form"},
                "prompt_variables": {"url": "https://shop.example/?ref=newsletter", "headers": "Lead"},
                "call_attempts": [last],
                "last_call_attempt": last,
            }
        )
        acts, _ = activities()
        await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    [(_, body)] = receiver.deliveries
    sent = json.loads(body)["call"]
    assert sent["metadata"] == call.metadata and sent["prompt_variables"] == call.prompt_variables
    assert sent["call_attempts"][0]["structured_output"] == last.structured_output
    assert sent["last_call_attempt"]["structured_output"] == last.structured_output


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http:/127.0.0.1:{port}/hooks/outdial", "it has no host"),
        ("http://127.0.0.1:{port}\\hooks\\outdial", "cannot be sent to"),
        ("http://hooks.example.com\\hook", "its host is no host name"),  # pydantic reads it as a path
    ],
)
async def test_a_webhook_url_that_cannot_be_sent_to_fails_for_good_saying_why(url: str, said: str) -> None:
    """Written a slash short, or with a backslash: stored before URLs were checked as sent, it failed
    as a scheme '' or was retried for 24 h (httpx's InvalidURL is no HTTPError)."""
    receiver = Receiver()
    async with serve(receiver.routes) as base:
        acts, _ = activities()
        call = final_call(webhook_url=f"{base}/hooks/outdial")
        call.assistant.webhook_url = url.format(port=base.rsplit(":", 1)[1])  # type: ignore[union-attr]
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    assert refused.value.non_retryable and said in refused.value.message
    assert receiver.deliveries == []


async def test_a_webhook_answered_with_a_redirect_says_redirects_are_not_followed() -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/hooks/outdial/"})

    async with serve(lambda app: app.router.add_post("/hooks/outdial", moved)) as base:
        acts, _ = activities()
        request = NotifyRequest(call=final_call(webhook_url=f"{base}/hooks/outdial"))
        with pytest.raises(ApplicationError) as failed:
            await ActivityEnvironment().run(acts.deliver_webhook, request)
    assert "answered HTTP 307 (redirects are not followed" in failed.value.message


async def test_a_process_running_a_worker_logs_no_webhook_url_at_info(
    time_env, task_queue, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs each request's full URL at INFO (a webhook's token, a custom LLM's key): a process that
    makes a worker holds the HTTP clients' loggers at WARNING, unless one was given a level on purpose."""
    loggers = [logging.getLogger(name) for name in CHATTY_HTTP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)  # as in a process that configured nothing but the root
    caplog.set_level(logging.INFO)
    receiver = Receiver()
    try:
        create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests())
        async with serve(receiver.routes) as base:
            acts, _ = activities()
            call = final_call(webhook_url=f"{base}/hooks/outdial?token=hook-t0ken")
            await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert len(receiver.deliveries) == 1 and "hook-t0ken" not in caplog.text


async def test_webhook_to_a_private_address_is_refused_unless_allowed() -> None:
    receiver = Receiver()
    async with serve(receiver.routes) as base:
        acts, _ = activities(allow_private_urls=False)
        call = final_call(webhook_url=f"{base}/hooks/outdial")
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    assert refused.value.type == "UnsafeUrl" and refused.value.non_retryable
    assert receiver.deliveries == []


async def test_webhook_gone_is_final_other_errors_retry_and_no_secret_is_final() -> None:
    gone = Receiver(fail_first=1, status=410)
    async with serve(gone.routes) as base:
        acts, _ = activities()
        request = NotifyRequest(call=final_call(webhook_url=f"{base}/hooks/outdial"))
        with pytest.raises(ApplicationError) as final:
            await ActivityEnvironment().run(acts.deliver_webhook, request)
        assert (final.value.type, final.value.non_retryable) == ("WebhookGone", True)
        gone.status = 500
        gone.fail_first = 2
        with pytest.raises(ApplicationError) as transient:
            await ActivityEnvironment().run(acts.deliver_webhook, request)
        assert (transient.value.type, transient.value.non_retryable) == ("WebhookUnavailable", False)
        unsigned, _ = activities(webhook_secret=None)
        with pytest.raises(ApplicationError) as unconfigured:
            await ActivityEnvironment().run(unsigned.deliver_webhook, request)
        assert (unconfigured.value.type, unconfigured.value.non_retryable) == ("WebhookNotConfigured", True)
        assert "is its OUTDIAL_DATABASE_URL the API's?" in unconfigured.value.message  # a worker on its own
    assert len(gone.deliveries) == 2


async def test_a_webhook_answer_is_not_read_past_its_status() -> None:
    """A receiver answering 200 with an endless body: the delivery is done at its status line (the
    whole answer was read into the worker's memory, however large)."""

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            await response.write(b"x" * 65536)

    async with serve(lambda app: app.router.add_post("/hook", endless)) as base:
        acts, _ = activities()
        delivery = ActivityEnvironment().run(
            acts.deliver_webhook, NotifyRequest(call=final_call(webhook_url=f"{base}/hook"))
        )
        result = await asyncio.wait_for(delivery, timeout=10)
    assert (result.status, result.detail) == ("sent", "HTTP 200 on attempt 1")


# --- email ------------------------------------------------------------------------------------------


async def test_outcome_email_goes_through_smtp_when_the_outcome_matches() -> None:
    sink = MailSink()
    server = await start_mail_sink(sink, port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        acts, _ = activities(smtp_host="127.0.0.1", smtp_port=port)
        subscribed = {
            "email_notification_address": "sales@example.com,boss@example.com",  # the client's list form
            "email_notification_outcomes": ["interested"],
        }
        sent = await ActivityEnvironment().run(
            acts.send_outcome_email, NotifyRequest(call=final_call(**subscribed))
        )
        skipped = await ActivityEnvironment().run(
            acts.send_outcome_email, NotifyRequest(call=final_call(outcome="not_interested", **subscribed))
        )
    finally:
        server.close()
        await server.wait_closed()
    assert (sent.status, skipped.status) == ("sent", "skipped")
    [message] = sink.messages
    assert message["To"] == "sales@example.com, boss@example.com"
    assert sink.recipients == [["sales@example.com", "boss@example.com"]]
    assert message["Subject"] == "[outdial] interested: call to +33612345678"
    assert message["Message-ID"] == "<0b7d3c1e-8a51-4a8e-9a3e-1f2d3c4b5a69.outcome@outdial>"
    text = message.get_content()
    assert "She asked for the details." in text
    assert "Callee: Yes, I'm interested. My email is claire@example.com." in text


async def test_email_to_an_unreachable_smtp_server_is_retried() -> None:
    acts, _ = activities(smtp_host="127.0.0.1", smtp_port=1)  # nothing listens on port 1
    call = final_call(email_notification_address="a@example.com", email_notification_outcomes=["interested"])
    with pytest.raises(ApplicationError) as unavailable:
        await ActivityEnvironment().run(acts.send_outcome_email, NotifyRequest(call=call))
    assert (unavailable.value.type, unavailable.value.non_retryable) == ("EmailUnavailable", False)


class Choosy(MailSink):
    """Refuses `busy@` once with 450 (try later) and `gone@` always with 550 (no such mailbox)."""

    deferred = False

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address.startswith("gone@"):
            self.refused.append(address)
            return "550 no such mailbox"
        if address.startswith("busy@") and not self.deferred:
            self.deferred = True
            return "450 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_an_address_the_server_defers_is_sent_the_email_later_and_once() -> None:
    """Three addresses, one deferred (450), one refused for good (550): the retry sends to the deferred
    one only, and the result names the one refused for good (it was reported sent, to one address)."""
    sink = Choosy()
    server = await start_mail_sink(sink, port=0)
    port = server.sockets[0].getsockname()[1]
    heartbeats: list[Any] = []
    try:
        acts, _ = activities(smtp_host="127.0.0.1", smtp_port=port)
        call = final_call(
            email_notification_address="sales@example.com,busy@example.com,gone@example.com",
            email_notification_outcomes=["interested"],
        )
        first = ActivityEnvironment()
        first.on_heartbeat = lambda *details: heartbeats.append(details)
        with pytest.raises(ApplicationError) as deferred:
            await first.run(acts.send_outcome_email, NotifyRequest(call=call))
        again = ActivityEnvironment()  # the next try, with what the first one recorded
        again.info = dataclasses.replace(again.info, attempt=2, heartbeat_details=heartbeats[-1])
        sent = await again.run(acts.send_outcome_email, NotifyRequest(call=call))
    finally:
        server.close()
    assert (deferred.value.type, deferred.value.non_retryable) == ("EmailUnavailable", False)
    assert "busy@example.com" in deferred.value.message
    assert sink.recipients == [["sales@example.com"], ["busy@example.com"]]  # gone@ not asked again
    assert sent.status == "sent" and "gone@example.com" in sent.detail and "550" in sent.detail
    assert sink.refused == ["gone@example.com"]


# --- SMS --------------------------------------------------------------------------------------------


async def test_after_call_sms_is_sent_once_per_order_and_never_to_do_not_contact() -> None:
    acts, outbox = activities()
    call = final_call(
        after_call_sms_prompt="Thanks {{name}}, here is the demo link: https://acme.example/d "
        "({{from_phone_number}})"
    )
    first = await ActivityEnvironment().run(acts.send_after_call_sms, NotifyRequest(call=call))
    again = await ActivityEnvironment().run(acts.send_after_call_sms, NotifyRequest(call=call))  # a retry
    assert first.status == again.status == "sent" and again.detail and again.detail.endswith("(duplicate)")
    [message] = outbox.sent.values()
    assert (message.to, message.from_) == ("+33612345678", "+33159000000")
    assert message.body == "Thanks Claire, here is the demo link: https://acme.example/d (+33159000000)"
    blocked = call.model_copy(update={"outcome": "do_not_contact"})
    skipped = await ActivityEnvironment().run(acts.send_after_call_sms, NotifyRequest(call=blocked))
    assert skipped.status == "skipped" and len(outbox.sent) == 1


async def test_voicemail_sms_after_an_order_that_only_reached_voicemail() -> None:
    acts, outbox = activities()
    call = final_call(
        outcome=None,
        results=("voicemail", "voicemail"),
        voicemail_sms_prompt="Hi {{name}}, call us back at {{from_phone_number}}.",  # as the message said it
    )
    result = await ActivityEnvironment().run(acts.send_voicemail_sms, NotifyRequest(call=call))
    assert result.status == "sent"
    [message] = outbox.sent.values()
    assert message.body == "Hi Claire, call us back at +33159000000." and message.idempotency_key.endswith(
        ":voicemail-sms"
    )


async def test_no_sms_to_a_number_another_call_put_on_the_do_not_contact_list() -> None:
    """While this order waited for its retries, another order's callee (the same number) asked not to be
    contacted again: neither text goes out, unless this order was placed with the override."""
    contacts = InMemoryDoNotContactRegistry()
    acts, outbox = activities(contacts)
    voicemail = final_call(outcome=None, results=("voicemail",), voicemail_sms_prompt="Call us back.")
    reached = final_call(after_call_sms_prompt="Thanks {{name}}.")
    await contacts.add(
        DoNotContactEntry(
            organization_id=voicemail.organization_id,
            phone_number=voicemail.to_phone_number,
            call_id=str(uuid.uuid4()),
            recorded_at=datetime.now(UTC),
        )
    )
    for send, call in ((acts.send_voicemail_sms, voicemail), (acts.send_after_call_sms, reached)):
        result = await ActivityEnvironment().run(send, NotifyRequest(call=call))
        assert (result.status, result.detail) == ("skipped", "the number is on the do-not-contact list")
    assert outbox.sent == {}
    # The override stands for a consent given before the order was placed: not against a request since.
    overridden = voicemail.model_copy(update={"metadata": {"do_not_contact_override": "true"}})
    result = await ActivityEnvironment().run(acts.send_voicemail_sms, NotifyRequest(call=overridden))
    assert result.status == "skipped" and outbox.sent == {}
    consented = overridden.model_copy(update={"created_at": datetime.now(UTC) + timedelta(minutes=1)})
    result = await ActivityEnvironment().run(acts.send_voicemail_sms, NotifyRequest(call=consented))
    assert result.status == "sent" and len(outbox.sent) == 1


class FakeTwilio:
    def __init__(self, replies: list[tuple[int, dict[str, Any]]]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append((request.path, dict(request.headers), {k: str(v) for k, v in form.items()}))
        status, body = self.replies.pop(0)
        return web.json_response(body, status=status)


async def test_twilio_adapter_speaks_the_messages_api() -> None:
    twilio = FakeTwilio(
        [
            (201, {"sid": "SM0123", "status": "queued"}),
            (400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
            (503, {"code": 20503, "message": "Service unavailable", "status": 503}),
        ]
    )
    message = SmsMessage(to="+33612345678", from_="+33159000000", body="Hello", idempotency_key="k")
    async with serve(twilio.routes) as base:
        sms = TwilioSms("AC0123456789", "auth-token-0123456789", base_url=base)
        receipt = await sms.send(message)
        with pytest.raises(ApplicationError) as rejected:
            await sms.send(message)
        with pytest.raises(ApplicationError) as unavailable:
            await sms.send(message)
    assert (receipt.id, receipt.status) == ("SM0123", "queued")
    path, headers, form = twilio.requests[0]
    assert path == "/2010-04-01/Accounts/AC0123456789/Messages.json"
    assert headers["Authorization"].startswith("Basic ")
    assert form == {"To": "+33612345678", "From": "+33159000000", "Body": "Hello"}
    assert (rejected.value.type, rejected.value.non_retryable) == ("SmsRejected", True)
    assert "code 21211" in rejected.value.message
    assert (unavailable.value.type, unavailable.value.non_retryable) == ("SmsUnavailable", False)


async def test_twilio_answers_that_leave_it_unknown_whether_it_sent_are_not_sent_again() -> None:
    """Taken (2xx) with a body that is not JSON: sent. Sent and not answered in time: maybe sent, so
    final (a retry texted the callee twice). Never reached: retried."""
    replies: list[Any] = ["<html>proxy</html>", "[]", "slow"]

    async def handle(request: web.Request) -> web.Response:
        await request.post()
        reply = replies.pop(0)
        if reply == "slow":
            await asyncio.sleep(2)
        return web.Response(text=reply, status=201, content_type="application/json")

    message = SmsMessage(to="+33612345678", from_="+33159000000", body="Hello", idempotency_key="k")
    async with serve(
        lambda app: app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handle)
    ) as base:
        sms = TwilioSms("AC0123456789", "auth-token-0123456789", base_url=base, timeout=0.5)
        receipt = await sms.send(message)
        assert (await sms.send(message)).status == "accepted"  # JSON, but not Twilio's object
        with pytest.raises(ApplicationError) as unanswered:
            await sms.send(message)
    with pytest.raises(ApplicationError) as unreachable:
        await sms.send(message)  # the server is gone: nothing sent
    assert (receipt.id, receipt.status) == ("unknown", "accepted")
    assert (unanswered.value.type, unanswered.value.non_retryable) == ("SmsUncertain", True)
    assert (unreachable.value.type, unreachable.value.non_retryable) == ("SmsUnavailable", False)


async def test_every_sms_is_held_to_its_length() -> None:
    """The voicemail SMS is the assistant's own text: it is cut as the after-call one is."""
    acts, outbox = activities()
    call = final_call(outcome=None, results=("voicemail",), voicemail_sms_prompt="x" * 2000)
    result = await ActivityEnvironment().run(acts.send_voicemail_sms, NotifyRequest(call=call))
    assert result.status == "sent" and [len(m.body) for m in outbox.sent.values()] == [MAX_SMS_CHARS]


async def order_and_notifications(
    env: Any, task_queue: str, settings: Any, params: CallCreateParams, call_id: str
) -> tuple[Any, NotificationsReport]:
    """Run an order to its end on a worker with `settings`, then its notifications."""
    async with create_worker(env.client, task_queue=task_queue, settings=settings):
        call = await env.client.execute_workflow(
            CallOrderWorkflow.run, params, id=f"call-{call_id}", task_queue=task_queue
        )
        report = await env.client.get_workflow_handle(
            notifications_workflow_id(call_id), result_type=NotificationsReport
        ).result()
    return call, report


@pytest.mark.parametrize(
    ("prompt", "note", "count"),
    [
        # a 200 KB assistant to 24 channels: some 5 MB in all
        ("y" * 200_000, "", 24),
        # a Call of 1 MB in UTF-8 but 250,000 characters (emoji) to 5 channels: counted in characters,
        # 8 requests fitted in one task, some 5 MB
        ("Offer a demo.", "\U0001f600" * 250_000, 5),
    ],
    ids=["many-channels", "utf8-bytes"],
)
async def test_a_large_calls_notifications_are_all_delivered(
    time_env, task_queue, prompt, note, count
) -> None:  # type: ignore[no-untyped-def]
    """Every delivery's request holds the whole Call, and one workflow task may send 4 MB: they are
    scheduled in batches; before, the notifications workflow failed its first task for good and nothing
    was sent."""
    call_id = str(uuid.uuid4())
    channels = [{"id": f"C0{n:04d}"} for n in range(count)]
    params = CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": prompt,
                "slack": {"channels": channels, "connection_id": "conn_1", "outcomes": ["interested"]},
            },
            "force_now": True,
            "metadata": {"simulation": "human:interested", "note": note},
        }
    )
    call, report = await order_and_notifications(time_env, task_queue, settings_for_tests(), params, call_id)
    assert call.outcome == "interested"
    assert sorted(r.detail.split()[1] for r in report.results if r.status == "sent" and r.detail) == [
        c["id"] for c in channels
    ]


async def test_voicemail_sms_of_an_order_goes_out_through_twilio(time_env, task_queue) -> None:  # type: ignore[no-untyped-def]
    """End to end: an order that only reached voicemail, OUTDIAL_SMS=twilio, the real httpx adapter
    against a local Twilio-compatible server."""
    twilio = FakeTwilio([(201, {"sid": "SM0a1b", "status": "queued"})])
    call_id = str(uuid.uuid4())
    params = CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": "Offer a demo.",
                "voicemail_sms_prompt": "Hi {{name}}, sorry we missed you. Call us back at +33159000000.",
                "call_retry_config": {"max_retry_attempts": 1},
            },
            "prompt_variables": {"name": "Claire"},
            "force_now": True,
            "metadata": {"simulation": "voicemail"},
        }
    )
    async with serve(twilio.routes) as base:
        settings = settings_for_tests(
            sms_provider="twilio",
            twilio_account_sid="AC0123456789",
            twilio_auth_token="auth-token-0123456789",
            twilio_base_url=base,
        )
        call, report = await order_and_notifications(time_env, task_queue, settings, params, call_id)
    assert (call.status, call.last_call_attempt.result) == ("completed", "voicemail")  # type: ignore[union-attr]
    assert [(r.channel, r.status, r.detail) for r in report.results] == [
        ("voicemail_sms", "sent", "twilio SM0a1b queued")
    ]
    [(path, headers, form)] = twilio.requests
    assert path == "/2010-04-01/Accounts/AC0123456789/Messages.json" and headers["Authorization"].startswith(
        "Basic "
    )
    assert form == {
        "To": "+33612345678",
        "From": call.from_phone_number,
        "Body": "Hi Claire, sorry we missed you. Call us back at +33159000000.",
    }


# --- Slack ------------------------------------------------------------------------------------------------

SLACK = {"channels": [{"id": "C0SALES"}, {"id": "C0OPS", "name": "ops"}], "connection_id": "conn_1"}


def test_slack_is_due_for_the_outcomes_it_names() -> None:
    slack = {"slack": {**SLACK, "outcomes": ["interested", "none"]}}
    assert due_channels(final_call(**slack)) == ["slack"]
    assert due_channels(final_call(outcome="completed", **slack)) == []
    assert due_channels(final_call(outcome=None, results=("voicemail",), **slack)) == ["slack"]
    assert due_channels(final_call(status="calling", **slack)) == []


def test_the_slack_message_fills_the_placeholders_the_client_documents() -> None:
    """The template's names win over the order's prompt_variables and what the call found out
    (structured_output, the latest attempt's), which are there too; an unknown name stays visible."""
    call = final_call(results=("human", "human"))
    call.call_attempts[0].structured_output = {"first_name": "Claire", "company": "Acme", "budget": 1200}
    call.call_attempts[1].structured_output = {"budget": 900}
    call.prompt_variables = {"name": "Claire", "budget": "?", "phone": "not this one"}
    call = call.with_derived_fields()  # the contact, from what the call found out
    template = "{{contact_name}} ({{company}}): {{outcome}}, budget {{budget}}, {{phone}} {{call_url}} {{x}}"
    assert slack_text(call, template, "http://ui/c") == (
        "Claire (Acme): interested, budget 1200, +33612345678 http://ui/c {{x}}"
    )
    assert slack_text(call, None, None) == (  # the default, its empty lines (no call_url) dropped
        "*interested*: call to +33612345678\nClaire, Acme\nShe asked for the details."
    )


def test_what_the_callee_said_cannot_become_slack_markup() -> None:
    """A mention or a disguised link in the values filled in (a callee's name, the summary) shows as
    written; the operator's template keeps its own markup."""
    call = final_call(results=("human",))
    call.call_attempts[0].structured_output = {"first_name": "Claire <!channel>"}
    call.outcome_summary = "<https://evil.example/phish|Open the CRM record> & more"
    call = call.with_derived_fields()
    text = slack_text(call, "<{{call_url}}|Call> {{first_name}}: {{summary}}", "http://ui/c?a=1&b=2")
    assert text == (
        "<http://ui/c?a=1&amp;b=2|Call> Claire &lt;!channel&gt;: "
        "&lt;https://evil.example/phish|Open the CRM record&gt; &amp; more"
    )


class FakeSlack:
    """Slack's Web API `chat.postMessage`: answers `ok` with a ts, or the error scripted for a channel
    (every time, or with `once` the first time only)."""

    def __init__(
        self, errors: dict[str, tuple[int, str]] | None = None, *, once: bool = False, retry_after: str = ""
    ) -> None:
        self.errors = errors or {}
        self.once = once
        self.retry_after = retry_after  # a 429's Retry-After, as Slack sends it
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat.postMessage", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = (
            dict(await request.post()) if request.content_type != "application/json" else await request.json()
        )
        self.posts.append((request.headers.get("Authorization", ""), body))
        scripted = self.errors.pop if self.once else self.errors.get
        status, error = scripted(str(body["channel"]), (200, ""))
        if error.startswith("<"):  # a proxy's error page
            return web.Response(text=error, status=status, content_type="text/html")
        if error:
            wait = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
            return web.json_response({"ok": False, "error": error}, status=status, headers=wait)
        return web.json_response(
            {"ok": True, "channel": body["channel"], "ts": f"1700000000.{len(self.posts):06d}"}
        )


async def test_slack_web_api_adapter_posts_with_the_connections_token() -> None:
    fake = FakeSlack(
        {
            "C0GONE": (200, "channel_not_found"),
            "C0BUSY": (429, "ratelimited"),
            "C0DOWN": (502, "<h1>502</h1>"),
        },
        retry_after="30",
    )
    message = SlackMessage(
        organization_id="org_local",
        connection_id="conn_1",
        channel="C0SALES",
        text="*interested*",
        idempotency_key="k",
    )
    async with serve(fake.routes) as base:
        slack = SlackWebApi({"conn_1": "xoxb-conn-1"}, "xoxb-default", base_url=f"{base}/api/")
        receipt = await slack.post(message)
        await slack.post(message.model_copy(update={"connection_id": "conn_other"}))
        with pytest.raises(ApplicationError) as gone:
            await slack.post(message.model_copy(update={"channel": "C0GONE"}))
        with pytest.raises(ApplicationError) as busy:
            await slack.post(message.model_copy(update={"channel": "C0BUSY"}))
        with pytest.raises(ApplicationError) as down:
            await slack.post(message.model_copy(update={"channel": "C0DOWN"}))
        with pytest.raises(ApplicationError) as unconfigured:
            await SlackWebApi({}, base_url=f"{base}/api/").post(message)
    assert (receipt.poster, receipt.channel, receipt.ts) == ("slack", "C0SALES", "1700000000.000001")
    (auth, body), (other_auth, _) = fake.posts[:2]
    assert (auth, other_auth) == ("Bearer xoxb-conn-1", "Bearer xoxb-default")
    assert (body["channel"], body["text"]) == ("C0SALES", "*interested*")
    assert (gone.value.type, gone.value.non_retryable) == ("SlackRejected", True)
    assert "channel_not_found" in gone.value.message
    assert (busy.value.type, busy.value.non_retryable) == ("SlackUnavailable", False)
    assert busy.value.next_retry_delay == timedelta(seconds=30)  # its Retry-After, not the policy's 10 s
    assert (down.value.type, down.value.non_retryable, down.value.message) == (
        "SlackUnavailable",
        False,
        "Slack: HTTP 502",
    )
    assert (unconfigured.value.type, unconfigured.value.non_retryable) == ("SlackNotConfigured", True)
    assert len(fake.posts) == 5  # no token, no request; and the client itself never retried


async def test_a_slack_connection_serves_its_own_organization_alone() -> None:
    """Another organization naming a connection (`conn_a`) posted into its owner's channels with its
    owner's bot token, or with the operator's default bot: a token serves its organization alone."""
    fake = FakeSlack({})
    tokens = {"conn_a": "xoxb-home", "org_b/conn_b": "xoxb-org-b"}
    async with serve(fake.routes) as base:
        slack = SlackWebApi(tokens, "xoxb-default", home_organization="org_a", base_url=f"{base}/api/")

        async def post(organization_id: str, connection_id: str) -> str | None:
            message = SlackMessage(
                organization_id=organization_id,
                connection_id=connection_id,
                channel="C0SALES",
                text="hi",
                idempotency_key=f"{organization_id}/{connection_id}",
            )
            try:
                await slack.post(message)
            except ApplicationError as refused:
                assert (refused.type, refused.non_retryable) == ("SlackNotConfigured", True)
                return None
            return str(fake.posts[-1][0])

        assert await post("org_a", "conn_a") == "Bearer xoxb-home"
        assert await post("org_a", "conn_other") == "Bearer xoxb-default"  # the deployment's own bot
        assert await post("org_b", "conn_b") == "Bearer xoxb-org-b"
        assert await post("org_b", "conn_a") is None  # org_a's connection: not org_b's to use
        assert await post("org_b", "conn_other") is None  # nor the operator's default bot
        assert await post("org_a", "org_b/conn_b") is None  # nor its own, naming another's entry
    config = AgentConfig(
        calendly_tokens=tokens, calendly_default_token="cal-default", home_organization="org_a"
    )
    assert (config.calendly_token("org_a", "conn_a"), config.calendly_token("org_b", "conn_a")) == (
        "xoxb-home",
        None,
    )


async def test_an_orders_slack_message_goes_to_each_channel_and_only_a_failure_is_retried(
    time_env, task_queue
) -> None:  # type: ignore[no-untyped-def]
    """End to end: OUTDIAL_SLACK=slack, the real slack_sdk against a local Slack-compatible server.
    One channel is rate limited once: it alone is posted again; the other got one message."""
    fake = FakeSlack({"C0OPS": (429, "ratelimited")}, once=True)
    call_id = str(uuid.uuid4())
    params = CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "assistant": {
                "prompt": "Offer {{name}} a demo.",
                "slack": {
                    **SLACK,
                    "outcomes": ["interested"],
                    "template": "{{name}}: {{outcome}} {{call_url}}",
                },
            },
            "prompt_variables": {"name": "Claire"},
            "force_now": True,
            "metadata": {"simulation": "human:interested"},
        }
    )
    async with serve(fake.routes) as base:
        settings = settings_for_tests(
            slack_provider="slack",
            slack_tokens={"conn_1": "xoxb-conn-1"},
            slack_base_url=f"{base}/api/",
            temporal_ui_url="http://localhost:8233",
        )
        call, report = await order_and_notifications(time_env, task_queue, settings, params, call_id)
    assert call.outcome == "interested"
    assert sorted((r.channel, r.status, r.detail.split()[1]) for r in report.results if r.detail) == [
        ("slack", "sent", "C0OPS"),
        ("slack", "sent", "C0SALES"),
    ]
    channels = [body["channel"] for _, body in fake.posts]
    assert sorted(channels) == ["C0OPS", "C0OPS", "C0SALES"]  # the rate-limited one twice, the other once
    url = f"http://localhost:8233/namespaces/default/workflows/call-{call_id}"
    assert {body["text"] for _, body in fake.posts} == {f"Claire: interested {url}"}


# --- the URL guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fd00:ec2::254", "private"),
        ("100.100.100.200", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("fec0::1", "site-local"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_unsafe_addresses(address: str, reason: str | None) -> None:
    found = unsafe_reason(address)
    assert found is None if reason is None else found is not None and found.startswith(reason)


async def test_url_guard_checks_scheme_and_resolved_addresses() -> None:
    for url in ("http://localhost:8000/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/"):
        with pytest.raises(UnsafeUrlError):
            await check_url(url, allow_private=False)
    with pytest.raises(UnsafeUrlError, match="scheme"):
        await check_url("file:///etc/passwd", allow_private=True)
    await check_url("http://localhost:8000/x", allow_private=True)
    await check_url("https://8.8.8.8/", allow_private=False)  # a literal: no DNS, no traffic
    # A label over 63 characters can never resolve: final, not a lookup retried for 24 h (UnicodeError)
    with pytest.raises(UnsafeUrlError, match="not a host name DNS can look up"):
        await check_url(f"https://{'a' * 64}.example.com/hook", allow_private=True)
    with pytest.raises(ValidationError, match="labels of at most 63 characters"):
        assistant = {"prompt": "Hi", "webhook_url": f"https://{'a' * 64}.io/"}
        CallCreateParams.model_validate({"phone_number": "+33612345678", "assistant": assistant})


async def test_guarded_client_pins_the_checked_address_and_keeps_the_host_header() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(text="ok")

    async with serve(lambda app: app.router.add_get("/", handle)) as base:
        port = base.rsplit(":", 1)[1]
        async with guarded_client(allow_private=True) as client:
            response = await client.get(f"http://localhost:{port}/")
        async with guarded_client(allow_private=False) as client:
            with pytest.raises(UnsafeUrlError):
                await client.get(f"http://localhost:{port}/")
    assert response.text == "ok" and seen == [f"localhost:{port}"]


def resolved_by(monkeypatch: pytest.MonkeyPatch, resolver: Callable[..., Awaitable[Any]]) -> None:
    """Names looked up on this event loop are answered by `resolver(host, port, **kwargs)`."""
    monkeypatch.setattr(type(asyncio.get_running_loop()), "getaddrinfo", lambda _, *a, **k: resolver(*a, **k))


async def echo_host(request: web.Request) -> web.Response:
    """The Host header the request came with."""
    return web.Response(text=request.headers["Host"])


async def test_a_name_that_fails_to_resolve_once_is_a_connection_failure_and_each_address_is_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DNS server failing once is a network failure (retried, as a receiver that is down is), not a
    refused URL (final: the webhook was dropped for good); and a name whose first address does not
    answer is reached at the next, as a client connecting by name would."""
    real = asyncio.get_running_loop().getaddrinfo
    answers: list[list[str] | None] = [None, ["127.0.0.2", "127.0.0.1"]]

    async def resolver(host: str, port: int, **kwargs: Any) -> Any:
        if host != "hooks.example":
            return await real(host, port, **kwargs)
        addresses = answers.pop(0)
        if addresses is None:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    resolved_by(monkeypatch, resolver)
    async with serve(lambda app: app.router.add_get("/", echo_host)) as base:
        port = base.rsplit(":", 1)[1]
        async with guarded_client(allow_private=True) as client:
            with pytest.raises(httpx.ConnectError, match="cannot resolve"):
                await client.get(f"http://hooks.example:{port}/")
            response = await client.get(f"http://hooks.example:{port}/")  # 127.0.0.2 refuses: then .1
    assert response.text == f"hooks.example:{port}"


@pytest.mark.parametrize("written", ["faß.example", "xn--fa-hia.example"])
async def test_an_international_host_is_looked_up_as_sent_not_as_another_domain(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    """httpx sends `faß.example` as xn--fa-hia.example (IDNA 2008), but its Unicode `host`, given to the
    resolver, was looked up by the older rules as fass.example: another domain, which got the webhook."""
    asked: list[str] = []

    async def resolver(host: str, port: int, **kwargs: Any) -> Any:
        asked.append(host if isinstance(host, str) else host.decode())
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    resolved_by(monkeypatch, resolver)
    async with serve(lambda app: app.router.add_get("/", echo_host)) as base:
        port = base.rsplit(":", 1)[1]
        async with guarded_client(allow_private=True) as client:
            response = await client.get(f"http://{written}:{port}/")
        await check_url(f"http://{written}:{port}/", allow_private=True)
    assert response.text == f"xn--fa-hia.example:{port}"
    assert asked == ["xn--fa-hia.example", "xn--fa-hia.example"]


# --- do not contact ---------------------------------------------------------------------------------


async def test_do_not_contact_is_remembered_and_refuses_a_later_order_unless_overridden() -> None:
    compliance = ComplianceActivities(InMemoryDoNotContactRegistry())
    env = ActivityEnvironment()
    remember = RememberRequest(organization_id="org_local", phone_number="+33612345678", call_id="c1")
    assert not await env.run(
        compliance.remember_do_not_contact, remember.model_copy(update={"outcome": "interested"})
    )
    await env.run(
        compliance.check_contact_allowed,
        ContactCheckRequest(organization_id="org_local", phone_number="+33612345678"),
    )
    assert await env.run(
        compliance.remember_do_not_contact, remember.model_copy(update={"outcome": "do_not_contact"})
    )
    check = ContactCheckRequest(organization_id="org_local", phone_number="+33612345678")
    with pytest.raises(ApplicationError) as refused:
        await env.run(compliance.check_contact_allowed, check)
    assert refused.value.type == DO_NOT_CONTACT and refused.value.non_retryable
    assert "asked not to be contacted again (call c1" in refused.value.message
    overridden = check.model_copy(update={"metadata": {"do_not_contact_override": "true"}})
    await env.run(compliance.check_contact_allowed, overridden)
    other_org = check.model_copy(update={"organization_id": "org_other"})
    await env.run(compliance.check_contact_allowed, other_org)


def test_post_call_settings_come_from_the_environment() -> None:
    from models.settings import Settings

    env = {
        "OUTDIAL_WEBHOOK_SECRET": SECRET,
        "OUTDIAL_ALLOW_PRIVATE_URLS": "1",
        "OUTDIAL_SMTP_HOST": "mail.internal",
        "OUTDIAL_SMTP_PORT": "2525",
        "OUTDIAL_SMS": "twilio",
        "TWILIO_ACCOUNT_SID": "AC1",
        "TWILIO_AUTH_TOKEN": "token-0123456789",
        "OUTDIAL_CODEC_KEY": "k",
        "OPENAI_API_KEY": "sk-env",
        "OUTDIAL_SLACK": "slack",
        "SLACK_BOT_TOKEN": "xoxb-default-0123",
        "OUTDIAL_SLACK_TOKENS": "conn_1=xoxb-conn-1-0123, conn_2=xoxb-conn-2-0123",
        "OUTDIAL_TEMPORAL_UI_URL": "https://temporal.internal",
    }
    settings = Settings.load(config_file="/nonexistent", env=env)
    assert (settings.slack_provider, settings.slack_bot_token, settings.temporal_ui_url) == (
        "slack",
        "xoxb-default-0123",
        "https://temporal.internal",
    )
    assert settings.slack_tokens == {"conn_1": "xoxb-conn-1-0123", "conn_2": "xoxb-conn-2-0123"}
    assert (settings.webhook_secret, settings.allow_private_urls) == (SECRET, True)
    assert (settings.smtp_host, settings.smtp_port, settings.sms_provider) == (
        "mail.internal",
        2525,
        "twilio",
    )
    assert (settings.analyzer, settings.openai_api_key, settings.codec_key) == ("openai", "sk-env", "k")
    for secret in (SECRET, "token-0123456789", "sk-env", "xoxb-default-0123", "xoxb-conn-1-0123"):
        assert secret not in repr(settings)  # never in logs
    assert Settings.load(config_file="/nonexistent", env={}).allow_private_urls is False

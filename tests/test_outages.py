"""The LLM endpoint and the webhook receiver down for a while (time-skipping, real clients against
local servers): the order waits out the LLM's outage and completes with its outcome; the webhook
keeps being retried long after the order closed and is delivered once the receiver is back."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from aiohttp import web

from activities.notify import verify_signature
from models import CallCreateParams
from tests.helpers import settings_for_tests
from tests.http_fakes import FakeOpenAI, Status, serve
from workers import create_worker
from workflows.call_order import CallOrderWorkflow
from workflows.notify import NotificationsReport, notifications_workflow_id

OPEN = {
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [{"calling_window_start_time": "00:00", "calling_window_end_time": "23:59"}],
}
OUTCOME = {"outcome": "interested", "outcome_summary": "She asked for the details by email."}
LLM_DOWN_FOR = 8  # failed requests: more than a handful of retries, about two minutes of backoff
RECEIVER_DOWN_FOR = 12  # refused deliveries: about three hours of backoff


async def test_orders_complete_and_webhooks_catch_up_after_llm_and_receiver_outages(time_env, task_queue):
    llm = FakeOpenAI()
    llm.script = {"call_outcome": [Status(503)] * LLM_DOWN_FOR + [OUTCOME]}
    attempts: list[tuple[int, bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        status = 503 if len(attempts) < RECEIVER_DOWN_FOR else 200
        attempts.append((status, await request.read(), request.headers["Outdial-Signature"]))
        return web.json_response({"ok": status == 200}, status=status)

    def routes(app: web.Application) -> None:
        llm.routes(app)
        app.router.add_post("/hook", hook)

    async with serve(routes) as base:
        settings = settings_for_tests(
            analyzer="openai",
            openai_api_key="sk-test",
            openai_base_url=f"{base}/v1",
            allow_private_urls=True,
            webhook_secret="whsec_outage",
        )
        params = CallCreateParams.model_validate(
            {
                "phone_number": "+33698765432",
                "assistant": {
                    "prompt": "Offer a demo.",
                    "call_retry_config": OPEN,
                    "webhook_url": f"{base}/hook",
                },
                "metadata": {"simulation": "human:interested"},
            }
        )
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            order = await time_env.client.start_workflow(
                CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
            )
            for _ in range(100):  # into the outage: the call is over, its analysis keeps failing
                if len(llm.of_kind("call_outcome")) >= 2:
                    break
                await time_env.sleep(timedelta(seconds=5))
            assert len(llm.of_kind("call_outcome")) <= LLM_DOWN_FOR  # still down
            assert await order.query(CallOrderWorkflow.status) == "post_processing"
            call = await order.result()
            assert (call.status, call.outcome) == ("completed", "interested")  # the LLM's, after its outage
            assert len(llm.of_kind("call_outcome")) == LLM_DOWN_FOR + 1

            notifications = time_env.client.get_workflow_handle(
                notifications_workflow_id(call.id), result_type=NotificationsReport
            )
            async with time_env.time_skipping_unlocked():  # as `result()` of a started handle does
                report = await notifications.result()
            closed = await notifications.describe()

    assert [(r.channel, r.status) for r in report.results] == [("webhook", "sent")]
    assert [status for status, _, _ in attempts] == [503] * RECEIVER_DOWN_FOR + [200]  # then no more
    assert closed.close_time - closed.start_time > timedelta(hours=2)  # type: ignore[operator]
    _, body, signature = attempts[-1]
    event = json.loads(body)
    assert event["id"] == f"{call.id}:call.completed" and event["call"]["outcome"] == "interested"
    assert {json.loads(b)["id"] for _, b, _ in attempts} == {event["id"]}  # one event id across retries
    assert verify_signature("whsec_outage", signature, body)


async def test_an_order_waits_out_a_database_outage_before_its_first_step(
    time_env, task_queue, monkeypatch
) -> None:
    """Its first reads (the do-not-contact check, then its assistant and caller id) gave up after 5
    tries, some 15 s: a PostgreSQL restart ended every order being prepared `errored`."""
    from sqlalchemy.exc import OperationalError

    from activities import persistence

    real, reads = persistence.do_not_contact_entry, []

    def down_for_a_while(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(1)
        if len(reads) <= 8:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence, "do_not_contact_entry", down_for_a_while)
    params = CallCreateParams.model_validate(
        {
            "phone_number": "+33698765432",
            "assistant": {"prompt": "Offer a demo.", "call_retry_config": OPEN},
            "metadata": {"simulation": "human:interested"},
        }
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await time_env.client.execute_workflow(
            CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
        )
    assert (call.status, call.outcome, len(reads)) == ("completed", "interested", 9)

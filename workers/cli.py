"""`outdial`: run the local stack, the demo, the worker, and place or steer call orders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.json import JSON
from temporalio.client import Client

from activities.webhook_secrets import (
    WebhookSecretInfo,
    WebhookSecretPinned,
    rotate_webhook_secret,
    show_webhook_secret,
)
from api import create_app
from api.auth import issue_api_key
from models import Call, CallCreateParams
from models.settings import Settings
from models.tables import Database
from workers.demo import await_notifications, print_calls, print_notifications, run_demo, webhook_receiver
from workers.local_stack import LocalStack, local_stack
from workers.worker import connect, create_worker, register_search_attributes

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


async def _until_interrupted(stack: LocalStack) -> None:
    console.print(f"Temporal Web UI: [link]{stack.ui_url()}[/] — press Ctrl-C to stop")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


@app.command()
def dev() -> None:
    """Run the local stack (temporal-dev.yaml): dev server, codec, SMTP sink, worker, API; until Ctrl-C."""
    settings = Settings.load()

    async def main() -> None:
        async with local_stack(settings, console) as stack:
            await _until_interrupted(stack)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Keep the stack up for the Web UI afterwards.")] = True,
) -> None:
    """Run the local stack and six call orders against simulated callees, live, then their notifications."""
    settings = Settings.load()

    async def main() -> None:
        async with (
            local_stack(settings, console) as stack,
            webhook_receiver(stack.webhook_secret, console) as webhook_url,
        ):
            calls = await run_demo(
                stack.client, task_queue=stack.settings.task_queue, console=console, webhook_url=webhook_url
            )
            print_calls(console, calls)
            print_notifications(console, await await_notifications(stack.client, calls))
            if keep_running:
                await _until_interrupted(stack)
            else:
                console.print(f"Temporal Web UI: {stack.ui_url()}")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def worker() -> None:
    """Run a worker against TEMPORAL_ADDRESS (no dev server)."""
    settings = Settings.load()

    async def main() -> None:
        client = await connect(settings)
        await register_search_attributes(client)
        async with create_worker(client, task_queue=settings.task_queue, settings=settings):
            console.print(f"worker on {settings.temporal_address}, task queue {settings.task_queue}")
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command(name="api")
def serve_api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API (Revox-compatible) against TEMPORAL_ADDRESS; run workers with `outdial worker`."""
    import uvicorn

    uvicorn.run(create_app(Settings.load()), host=host, port=port, log_level="info")


apikey_app = typer.Typer(help="API keys of the HTTP API.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    organization: Annotated[
        str | None,
        typer.Option("--org", help="Organization id (created if new); default: temporal-dev.yaml's."),
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    email: Annotated[
        str, typer.Option(help="The user the key is issued to (GET /users/me).")
    ] = "dev@localhost",
) -> None:
    """Create an API key and print it (only its hash is stored: keep it)."""
    settings = Settings.load()
    organization = organization or settings.organization_id
    key = issue_api_key(Database.for_url(settings.database_url), organization, name=name, email=email)
    Console(stderr=True).print(f"API key for organization [bold]{organization}[/] ({name}):")
    print(key)


webhook_app = typer.Typer(
    help="The organization's webhook signing secret (receivers verify Outdial-Signature with it).",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook-secret")
OrganizationOption = Annotated[
    str | None, typer.Option("--org", help="Organization id; default: temporal-dev.yaml's.")
]


def _print_secret(info: WebhookSecretInfo) -> None:
    notes = Console(stderr=True)
    notes.print(f"webhook signing secret of organization [bold]{info.organization_id}[/]:")
    if info.pinned_by_environment:
        notes.print("(pinned by OUTDIAL_WEBHOOK_SECRET)")
    if info.previous_secret_valid_until:
        notes.print(f"(the previous secret also signs until {info.previous_secret_valid_until.isoformat()})")
    print(info.webhook_secret)


@webhook_app.command("show")
def webhook_secret_show(organization: OrganizationOption = None) -> None:
    """Print the secret (the organization is created, with one, if new)."""
    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    _print_secret(show_webhook_secret(settings, database, organization or settings.organization_id))


@webhook_app.command("rotate")
def webhook_secret_rotate(organization: OrganizationOption = None) -> None:
    """Replace the secret and print the new one; the previous one keeps signing for 24 hours."""
    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    try:
        info = rotate_webhook_secret(settings, database, organization or settings.organization_id)
    except WebhookSecretPinned as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    _print_secret(info)


@app.command()
def call(
    to: Annotated[str | None, typer.Option(help="Phone number to call, E.164.")] = None,
    prompt: Annotated[str | None, typer.Option(help="The assistant's prompt.")] = None,
    simulation: Annotated[str | None, typer.Option(help="Simulated callee, e.g. 'voicemail,human'.")] = None,
    force_now: Annotated[
        bool, typer.Option(help="Call now, ignoring scheduled_at and calling windows.")
    ] = False,
    file: Annotated[Path | None, typer.Option("--json", help="A CallCreateParams JSON file.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the order to end and print the Call.")] = False,
) -> None:
    """Place one call order (from flags or a JSON file of the seed's request body)."""
    body: dict = json.loads(file.read_text()) if file else {}
    if to:
        body["phone_number"] = to
    if prompt:
        body.setdefault("assistant", {})["prompt"] = prompt
    if simulation:
        body.setdefault("metadata", {})["simulation"] = simulation
    if force_now:
        body["force_now"] = True
    try:
        params = CallCreateParams.model_validate(body)
    except ValidationError as err:
        console.print(f"[red]invalid call order[/]\n{err}")
        raise typer.Exit(2) from None
    settings = Settings.load()

    async def main() -> None:
        client = await connect(settings)
        call_id = str(uuid.uuid4())
        handle = await client.start_workflow(
            "CallOrderWorkflow",
            params,
            id=f"call-{call_id}",
            task_queue=settings.task_queue,
            result_type=Call,
        )
        console.print(f"call order [bold]{call_id}[/] started")
        if wait:
            console.print(JSON((await handle.result()).model_dump_json()))

    asyncio.run(main())


def _handle(client: Client, call_id: str):  # type: ignore[no-untyped-def]
    return client.get_workflow_handle(call_id if call_id.startswith("call-") else f"call-{call_id}")


@app.command()
def status(call_id: str) -> None:
    """Print a call order's live Call (the `call` query)."""

    async def main() -> None:
        call = await _handle(await connect(), call_id).query("call", result_type=Call)
        console.print(JSON(call.model_dump_json()))

    asyncio.run(main())


def _signal_command(signal: str, doc: str) -> None:
    def command(call_id: str) -> None:
        async def main() -> None:
            await _handle(await connect(), call_id).signal(signal)
            console.print(f"{signal.replace('_', '-')} sent to {call_id}")

        asyncio.run(main())

    command.__doc__ = doc
    app.command(name=signal.replace("_", "-"))(command)


_signal_command("cancel", "Cancel a call order (a call in progress ends gracefully).")
_signal_command("force_now", "Call now: skip the wait, scheduled_at and calling windows.")
_signal_command("pause", "Pause a call order before its next attempt.")
_signal_command("resume", "Resume a paused call order; its next attempt is scheduled afresh.")


@app.command(name="voice-agent")
def voice_agent(
    dev: Annotated[bool, typer.Option(help="Development mode: debug logs, no idle job processes.")] = False,
    port: Annotated[int, typer.Option(help="Health-check HTTP port.")] = 8081,
) -> None:
    """Run the LiveKit voice agent that holds the calls (OUTDIAL_TELEPHONY=livekit; see README)."""
    from workers.voice_agent import run_voice_agent

    run_voice_agent(Settings.load(), dev=dev, port=port)

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

from models import Call, CallCreateParams
from models.settings import Settings
from workers.demo import print_calls, run_demo
from workers.devserver import start_dev_server, stop_dev_server
from workers.worker import connect, create_worker, register_search_attributes

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


def _ui_url(settings: Settings) -> str:
    return (
        f"http://localhost:{settings.dev_server.ui_port}/namespaces/{settings.temporal_namespace}/workflows"
    )


@contextlib.asynccontextmanager
async def _local_stack(settings: Settings):  # type: ignore[no-untyped-def]
    """The dev server (unless one already answers at TEMPORAL_ADDRESS) and a worker, stopped on exit."""
    server = None
    try:
        client = await connect(settings)
    except RuntimeError:
        console.print(f"[bold]starting Temporal dev server[/] (state in {settings.dev_server.db_filename})")
        server = await start_dev_server(settings)
        client = await connect(settings)
    try:
        await register_search_attributes(client)
        worker = create_worker(client, task_queue=settings.task_queue, settings=settings)
        async with worker:
            console.print(
                f"worker on task queue [bold]{settings.task_queue}[/] "
                f"(telephony: {settings.telephony}, analyzer: {settings.analyzer})"
            )
            yield client
    finally:
        if server:
            stop_dev_server(server)


async def _until_interrupted(settings: Settings) -> None:
    console.print(f"Temporal Web UI: [link]{_ui_url(settings)}[/] — press Ctrl-C to stop")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


@app.command()
def dev() -> None:
    """Run the local stack: Temporal dev server (temporal-dev.yaml) and the worker, until Ctrl-C."""
    settings = Settings.load()

    async def main() -> None:
        async with _local_stack(settings):
            await _until_interrupted(settings)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Keep the stack up for the Web UI afterwards.")] = True,
) -> None:
    """Run the local stack and six call orders against simulated callees, live."""
    settings = Settings.load()

    async def main() -> None:
        async with _local_stack(settings) as client:
            calls = await run_demo(client, task_queue=settings.task_queue, console=console)
            print_calls(console, calls)
            if keep_running:
                await _until_interrupted(settings)
            else:
                console.print(f"Temporal Web UI: {_ui_url(settings)}")

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

"""`outdial`: run the local stack, the demo, the worker, and place or steer call orders."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import json
import logging
import os
import re
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.json import JSON
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import QueryRejectCondition
from temporalio.exceptions import TerminatedError
from temporalio.service import RPCError, RPCStatusCode

from activities.providers import check_providers, provider_warnings
from activities.start_refusals import too_large
from activities.webhook_secrets import (
    WebhookSecretInfo,
    WebhookSecretPinned,
    rotate_webhook_secret,
    show_webhook_secret,
)
from api import create_app
from api.assistants import refuse_too_large
from api.auth import api_keys_of, issue_api_key, revoke_api_key
from api.calls import (
    DEFAULT_RETRY,
    refuse_far_future,
    refuse_no_common_window,
    signal_refused,
    start_unstarted,
)
from api.closed_orders import record_closed
from api.context import ApiContext
from api.errors import ApiError, describe
from api.live_state import QUERY_TIMEOUT, UNANSWERED
from api.schemas import CallCreateBody
from api.server import listenable
from models import Call, CallCreateParams
from models.call import ORDER_WORKFLOW_PREFIX, carried_too_much, order_workflow_id
from models.common import TERMINAL_STATUSES
from models.secrets import masked_json
from models.settings import PLAINTEXT_HISTORY, ConfigError, OrganizationId, Settings, config_file_shown
from models.tables import CallOrderRecord, Database, shown_url, unavailable, utcnow
from workers.codec import DEFAULT_CODEC_PORT, CodecKeyError, generate_key, start_codec_server, web_ui_origins
from workers.demo import (
    await_notifications,
    print_calls,
    print_notifications,
    run_campaign_demo,
    run_demo,
    webhook_receiver,
)
from workers.local_stack import LocalStack, StackNotStarted, local_stack
from workers.logs import configure_logging
from workers.worker import (
    connect,
    create_worker,
    draining,
    missing_namespace,
    register_search_attributes,
)

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()
stderr = Console(stderr=True)  # notes and errors (one line however long): stdout keeps the command's output


def _run_until_stopped(main: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived command until it ends, Ctrl-C, SIGTERM (`kill`, `docker stop`, systemd) or SIGHUP
    (its terminal closed): any way, its `async with` blocks unwind, so a worker drains and a dev server
    it started stops with it."""

    async def until_stopped() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # a closed terminal, unless run under nohup
            loop.add_signal_handler(signal.SIGHUP, task.cancel)
        await main()

    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(until_stopped())
    except StackNotStarted as err:  # a port in use, say: a line, not a traceback
        _failed(str(err))


async def _until_interrupted(stack: LocalStack) -> None:
    console.print(f"Temporal Web UI: [link]{escape(stack.ui_url())}[/] — press Ctrl-C to stop")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


@app.command()
def dev() -> None:
    """Run the local stack (temporal-dev.yaml): dev server, codec, SMTP sink, worker, API; until Ctrl-C."""
    settings = Settings.load()
    configure_logging()

    async def main() -> None:
        async with local_stack(settings, console) as stack:
            await _until_interrupted(stack)

    _run_until_stopped(main)


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Keep the stack up for the Web UI afterwards.")] = True,
) -> None:
    """Run the local stack and six call orders against simulated callees, live, then their notifications."""
    settings = Settings.load()
    configure_logging()

    async def main() -> None:
        async with (
            local_stack(settings, console) as stack,
            webhook_receiver(stack.webhook_secret, console) as webhook_url,
        ):
            calls = await run_demo(
                stack.client,
                task_queue=stack.settings.task_queue,
                organization_id=stack.settings.organization_id,
                console=console,
                webhook_url=webhook_url,
            )
            print_calls(console, calls)
            print_notifications(console, await await_notifications(stack.client, calls))
            await run_campaign_demo(stack.client, stack.settings, console)
            if keep_running:
                await _until_interrupted(stack)
            else:
                console.print(f"Temporal Web UI: {stack.ui_url()}")

    _run_until_stopped(main)


def _encrypted(settings: Settings) -> Settings:
    """A worker or API outside the local stack writes assistants' secrets (an LLM's api_key, tool
    headers) into Temporal's history: it refuses to, in clear text, unless the operator chose so."""
    if not settings.codec_key and not settings.plaintext_history:
        stderr.print(
            "[red]OUTDIAL_CODEC_KEY is not set[/]: secrets would be stored in clear text in Temporal's "
            "history. Set it to a key (outdial codec keygen), the same for every worker, API "
            f"and client; or set OUTDIAL_CODEC_KEY={PLAINTEXT_HISTORY} to run unencrypted on purpose.",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return settings


@app.command()
def worker() -> None:
    """Run a worker against TEMPORAL_ADDRESS (no dev server)."""
    settings = _encrypted(Settings.load())
    configure_logging()
    check_providers(settings)
    for warning in provider_warnings(settings):
        stderr.print(f"[yellow]{escape(warning)}[/]", soft_wrap=True)
    _schema_ready(settings)

    database = shown_url(settings.database_url)
    if settings.database_url == Settings.model_fields["database_url"].default:  # the API's, it must be
        database = (
            f"{Path(settings.database_url.removeprefix('sqlite:///')).resolve()} (OUTDIAL_DATABASE_URL unset)"
        )

    async def main() -> None:
        client = await _connected(settings)
        await register_search_attributes(client)
        drain = draining(settings)
        async with create_worker(
            client, task_queue=settings.task_queue, settings=settings, graceful_shutdown_timeout=drain
        ):
            console.print(
                f"worker on {settings.temporal_address}, task queue {settings.task_queue}; telephony "
                f"{settings.telephony}, analyzer {settings.analyzer}; database {database}",
                soft_wrap=True,
            )
            await asyncio.Event().wait()

    _run_until_stopped(main)


@app.command(name="api")
def serve_api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (Revox-compatible) against TEMPORAL_ADDRESS; run workers with `outdial worker`."""
    import uvicorn

    settings = _encrypted(Settings.load())
    _schema_ready(settings)
    app = create_app(settings)
    configure_logging()
    if reason := listenable(host, port):  # a line of ours (uvicorn's would say less, exit 3)
        _failed(f"the HTTP API cannot listen on {host}:{port}: {reason}; choose another --port")
    # uvicorn binds it itself: its sockets are TCP's own, so asyncio sets TCP_NODELAY on each connection
    # (on a socket of `socket.create_server`, it did not: every answer waited 40 ms for a delayed ACK)
    uvicorn.run(app, host=host, port=port, log_level="info")


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
    try:
        key = issue_api_key(Database.for_url(settings.database_url), organization, name=name, email=email)
    except ValidationError as err:  # a usage error (exit 2), naming the option
        problem = err.errors()[0]
        option = {"organization_id": "--org"}.get(str(problem["loc"][0]), f"--{problem['loc'][0]}")
        raise typer.BadParameter(problem["msg"], param_hint=option) from None
    stderr.print(f"API key for organization [bold]{escape(organization)}[/] ({escape(name)}):")
    print(key)


@apikey_app.command("list")
def apikey_list(
    organization: Annotated[
        str | None, typer.Option("--org", help="Organization id; default: temporal-dev.yaml's.")
    ] = None,
) -> None:
    """List the organization's keys: id, name, prefix, created, revoked (keys themselves are not stored)."""
    settings = Settings.load()
    organization = organization or settings.organization_id
    keys = api_keys_of(Database.for_url(settings.database_url), organization)
    columns = ("id", "name", "prefix", "created", "revoked")
    rows = [
        (
            key.id,
            key.name,
            key.prefix + "…",
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
        for key in keys
    ]
    if not console.is_terminal:  # piped: every value whole, a key a line (a table is cut to 80 columns)
        for row in (columns, *rows):
            print("\t".join(row))
        return
    table = Table(title=f"API keys of {escape(organization)}")
    # whole on any terminal: `outdial apikey revoke` takes the id as shown
    table.add_column("id", no_wrap=True, min_width=max((len(key.id) for key in keys), default=2))
    for column in columns[1:]:
        table.add_column(column)
    for key_id, name, *rest in rows:
        table.add_row(key_id, escape(name), *rest)
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `outdial apikey list` shows it.")],
    organization: Annotated[
        str | None, typer.Option("--org", help="Organization id; default: temporal-dev.yaml's.")
    ] = None,
) -> None:
    """Revoke a key: refused from then on, within 30 s.

    An API process that verified the key in the last 30 s may accept it until that time is up."""
    settings = Settings.load()
    organization = organization or settings.organization_id
    record = revoke_api_key(Database.for_url(settings.database_url), organization, key_id)
    if record is None:
        unknown = f"no key {key_id} in organization {organization}"
        stderr.print(f"[red]{escape(unknown)}[/]", soft_wrap=True)
        raise typer.Exit(2)  # an unknown id, as for a call or a campaign
    stderr.print(f"revoked {record.id} ({escape(record.name)}, {record.prefix}…)")


codec_app = typer.Typer(
    help="Payload encryption (OUTDIAL_CODEC_KEY): make a key, serve the codec to the Web UI and CLI.",
    no_args_is_help=True,
)
app.add_typer(codec_app, name="codec")


@codec_app.command("keygen")
def codec_keygen() -> None:
    """Print a new key for OUTDIAL_CODEC_KEY (the same for every worker, API and client)."""
    print(generate_key())


@codec_app.command("serve")
def codec_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = DEFAULT_CODEC_PORT,
) -> None:
    """Run the codec server for operators who hold the key.

    Secrets stay masked; only the Web UI's origin is admitted; OUTDIAL_CODEC_AUTH requires that
    Authorization header."""
    settings = Settings.load()

    async def main() -> None:
        try:
            runner = await start_codec_server(
                settings, host=host, port=port, auth=os.environ.get("OUTDIAL_CODEC_AUTH")
            )
        except OSError as err:  # the port taken, most likely: a line, not a traceback
            _failed(f"the codec server cannot listen on {host}:{port}: {err.strerror}; choose another --port")
        console.print(f"codec server on http://{host}:{port} (Web UI origins {web_ui_origins(settings)})")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    _run_until_stopped(main)


webhook_app = typer.Typer(
    help="The organization's webhook signing secret (receivers verify Outdial-Signature with it).",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook-secret")


def _organization_id(value: str | None) -> str | None:
    """An organization id as the tables hold it (as `apikey create` checks it): a usage error else."""
    if value is not None:
        try:
            TypeAdapter(OrganizationId).validate_python(value)
        except ValidationError as err:
            raise typer.BadParameter(err.errors()[0]["msg"]) from None
    return value


OrganizationOption = Annotated[
    str | None,
    typer.Option("--org", help="Organization id; default: temporal-dev.yaml's.", callback=_organization_id),
]


def _print_secret(info: WebhookSecretInfo) -> None:
    notes = stderr
    notes.print(f"webhook signing secret of organization [bold]{escape(info.organization_id)}[/]:")
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
        stderr.print(f"[red]{escape(str(err))}[/]", soft_wrap=True)
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
    file: Annotated[
        Path | None,
        typer.Option("--json", help="A CallCreateParams JSON file.", exists=True, dir_okay=False),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the order to end and print the Call.")] = False,
) -> None:
    """Place one call order (from flags or a JSON file of the seed's request body)."""
    try:
        body: dict = json.loads(file.read_text()) if file else {}
    except ValueError as err:
        stderr.print(f"[red]invalid call order[/]: {escape(f'{file} is not JSON ({err})')}", soft_wrap=True)
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        stderr.print(f"[red]invalid call order[/]: {escape(f'{file} is not a JSON object')}", soft_wrap=True)
        raise typer.Exit(2)
    if to:
        body["phone_number"] = to
    for field, name, value in (("assistant", "prompt", prompt), ("metadata", "simulation", simulation)):
        given = body.get(field)
        if value and (given is None or isinstance(given, dict)):  # else validation names the field
            body[field] = {**(given or {}), name: value}
    if force_now:
        body["force_now"] = True
    try:
        params = _admitted(body)
    except ValidationError as err:
        stderr.print(f"[red]invalid call order[/]: {escape(describe(err))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except ApiError as err:
        stderr.print(f"[red]invalid call order[/]: {escape(err.message)}", soft_wrap=True)
        raise typer.Exit(2) from None
    settings = _encrypted(Settings.load())  # the order's secrets go into its history

    async def main() -> None:
        client = await _connected(settings)
        call_id = str(uuid.uuid4())
        try:
            handle = await client.start_workflow(
                "CallOrderWorkflow",
                params,
                id=order_workflow_id(call_id),
                task_queue=settings.task_queue,
                result_type=Call,
                static_summary=f"call {params.phone_number}",  # as the API's orders show in the Web UI
                memo={"organization_id": settings.organization_id},  # its records, caller ids, webhooks
            )
        except RPCError as err:
            if not too_large(err):
                raise
            said = f"the call order is too large: {err.message}"
            stderr.print(f"[red]invalid call order[/]: {escape(said)}", soft_wrap=True)
            raise typer.Exit(2) from None
        stderr.print(f"call order [bold]{call_id}[/] started")  # stdout: the Call alone
        if wait:
            try:
                call = await handle.result()
            except WorkflowFailureError as err:  # terminated in Temporal (the Web UI's Terminate), or failed
                closed = await _closed(client, handle.id)  # as `status` shows it, when a worker stored it
                if closed is None:
                    how = "terminated" if isinstance(err.cause, TerminatedError) else "ended"
                    _failed(f"call order {call_id} was {how} in Temporal: {err.cause or err}")
                call = closed
            _print_call(call)

    asyncio.run(main())


def _admitted(body: dict) -> CallCreateParams:
    """The order as `POST /call` admits it, as far as it can be told without the database: no unknown
    field, not more than an order can carry, not scheduled past a century, and a number whose zones
    share a window (for an inline assistant; a stored one is checked by the order itself)."""
    params = CallCreateBody.model_validate(body)
    if params.assistant is not None:
        refuse_too_large(params.assistant)
    if why := carried_too_much(params):
        raise ApiError(413, "request_too_large", f"the call order is too large: {why}")
    now = utcnow()
    refuse_far_future("scheduled_at", params.scheduled_at, now)
    if params.assistant_id is None and not params.force_now:
        retry = (params.assistant and params.assistant.call_retry_config) or DEFAULT_RETRY
        refuse_no_common_window(
            params.phone_number, retry.applied(), now, "assistant.call_retry_config.timezone"
        )
    return params


def _print_call(call: Call) -> None:
    """Coloured on a terminal; piped, plain JSON (rich would wrap long strings with raw newlines)."""
    if console.is_terminal:
        console.print(JSON(masked_json(call)))
    else:
        print(masked_json(call))


def _call_id(call_id: str) -> str:
    """A call id as stored, from any spelling the API takes (its workflow id, upper case, braces)."""
    bare = call_id.removeprefix(ORDER_WORKFLOW_PREFIX)
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(bare))
    return bare


def _handle(client: Client, call_id: str):  # type: ignore[no-untyped-def]
    return client.get_workflow_handle(order_workflow_id(_call_id(call_id)))


def _schema_ready(settings: Settings) -> None:
    """The database's schema migrated before serving: a URL of no database outdial can use, or a user that
    may not create its tables, is one line at once (the worker started, and failed every write later).
    A database down is waited out: the API answers 503 until it is up, the activities retry."""
    with contextlib.suppress(OperationalError):
        Database.for_url(settings.database_url).migrate()


async def _connected(settings: Settings | None = None) -> Client:
    """A client; Temporal unreachable, or without the namespace, is a one-line error (exit 1) rather
    than a traceback."""
    settings = settings or Settings.load()
    try:
        client = await connect(settings)
    except RuntimeError as err:  # the SDK's "Failed client connect"
        _failed(unreachable(settings, err))
    return await _in_its_namespace(client, settings)


_WHY = (re.compile(r'message: "([^"]+)"'), re.compile(r'ConnectError\("([^"]+)"'))  # the OS's words first


def unreachable(settings: Settings, err: Exception) -> str:
    """Temporal unreachable, in a line saying why (not the transport's nested error) and what to do."""
    found = next((m[1] for pattern in _WHY if (m := pattern.search(str(err)))), None)
    why = found or " ".join(str(err).split())[:200]
    return (
        f"Temporal at {settings.temporal_address} is unreachable ({why}): start the local stack "
        f"(`outdial dev`), or set TEMPORAL_ADDRESS or temporal.address in {config_file_shown()} to your "
        "server"
    )


async def _in_its_namespace(client: Client, settings: Settings) -> Client:
    """The client once Temporal knows its namespace (a mistyped one is a common first error). Any other
    answer lets the command go on: a key may be allowed to start workflows but not to describe."""
    if problem := await missing_namespace(client, settings.temporal_address):
        _failed(problem)
    return client


def _failed(message: str) -> NoReturn:
    """A one-line error (exit 1), not a traceback."""
    stderr.print(f"[red]{escape(message)}[/]", soft_wrap=True)  # one line, as long as it is
    raise typer.Exit(1) from None


def _on_the_order(
    call_id: str,
    action: Callable[[Client], Awaitable[None]],
    without_temporal: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `action` against Temporal; an unknown call id is a one-line error (exit 2), as in the API,
    and Temporal unreachable is `without_temporal` if given, else a one-line error (exit 1)."""

    async def main() -> None:
        if without_temporal is None:
            client = await _connected()
        else:
            settings = Settings.load()
            try:
                client = await connect(settings)
            except RuntimeError:  # the SDK's "Failed client connect"
                return await without_temporal()
            await _in_its_namespace(client, settings)
        try:
            await action(client)
        except (KeyError, ValueError) as err:  # the payload converter's: a key this process lacks
            if "encrypted" not in str(err):
                raise
            _failed(
                f"call order {call_id}'s payloads are encrypted with a key this process does not have "
                f"({str(err).strip(chr(39))}): set OUTDIAL_CODEC_KEY to the workers' (beside "
                "temporal-dev.yaml, the CLI reads the one `outdial dev` made)"
            )
        except WorkflowQueryFailedError as err:  # an order refused as invalid: it says why
            _failed(f"call order {call_id}: {err}")
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                _failed(f"Temporal could not do it: {err}")
            # as the API's 409: an order that has ended is there, it just takes no more signals
            what = f"no call order {call_id}"
            if "already completed" in err.message:
                what = f"call order {call_id} has ended; it takes no more signals"
            stderr.print(f"[red]{escape(what)}[/]", soft_wrap=True)  # one line, piped too
            raise typer.Exit(2) from None

    asyncio.run(main())


@app.command()
def status(call_id: str) -> None:
    """Print a call order's live Call (the `call` query), or its stored state if none answers.

    None answers when no worker runs, or Temporal is unreachable."""

    async def show(client: Client) -> None:
        handle = _handle(client, call_id)
        try:
            try:
                closed = QueryRejectCondition.NOT_OPEN
                call = await handle.query(
                    "call", result_type=Call, rpc_timeout=QUERY_TIMEOUT, reject_condition=closed
                )
            except WorkflowQueryRejectedError:  # closed: as it left its row, closed here if terminated
                call = await _closed(client, handle.id) or await handle.query(
                    "call", result_type=Call, rpc_timeout=QUERY_TIMEOUT
                )
        except RPCError as err:
            unstarted = err.status == RPCStatusCode.NOT_FOUND
            answerable = err.status in UNANSWERED or unstarted
            stored = await asyncio.to_thread(_stored_call, call_id) if answerable else None
            if stored is None:
                raise
            said = "the query went unanswered"
            if unstarted:
                said = "its workflow is gone (Temporal's retention)"
                if stored.status == "not_launched":
                    said = "not started (a campaign's row)"
                elif stored.status == "initializing":
                    record = await asyncio.to_thread(
                        _stored_record, Database.for_url(Settings.load().database_url), _call_id(call_id)
                    )
                    startable = record is not None and record.params is not None
                    said = "not started (its POST /call failed" + (
                        "; cancel, pause or resume starts it)" if startable else ")"
                    )
            stderr.print(f"[yellow]{escape(said)}: the order's stored state[/]", soft_wrap=True)
            call = stored
        _print_call(call)

    async def show_stored() -> None:
        stored = await asyncio.to_thread(_stored_call, call_id)
        if stored is None:
            _failed(f"Temporal is unreachable, and call order {call_id} is not in the database")
        stderr.print("[yellow]Temporal is unreachable: the order's stored state[/]")
        _print_call(stored)

    _on_the_order(call_id, show, show_stored)


async def _closed(client: Client, workflow_id: str) -> Call | None:
    """A closed order's Call: as stored when its row is final, closed from its close event when it was
    terminated (`api.closed_orders`); None when its workflow ended it but the row lags, or the
    database cannot say: the query replays it then."""
    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    call_id = workflow_id.removeprefix(ORDER_WORKFLOW_PREFIX)
    with contextlib.suppress(OperationalError):
        record = await asyncio.to_thread(_stored_record, database, call_id)
        if record is not None and record.status in TERMINAL_STATUSES:  # its row is final: no replay
            return Call.model_validate(record.call)
        if record is not None and record.call is not None:
            return await record_closed(client, database, settings.task_queue, record)
    return None


def _stored_record(database: Database, call_id: str) -> CallOrderRecord | None:
    with database.session() as session:
        return session.get(CallOrderRecord, call_id)


async def _stored_if_reachable(call_id: str) -> Call | None:
    """The order's stored Call, or None, the database unreachable included (Temporal has said enough)."""
    with contextlib.suppress(OperationalError):
        return await asyncio.to_thread(_stored_call, call_id)
    return None


def _stored_call(call_id: str) -> Call | None:
    database = Database.for_url(Settings.load().database_url)
    record = _stored_record(database, _call_id(call_id))
    return Call.model_validate(record.call) if record is not None else None


async def _started_by(client: Client, call_id: str, signal: str) -> bool:
    """Start, with `signal`, an order whose `POST /call` died before its workflow started (its row kept
    `initializing` with what starts it), as the API does; False when the row is no such order's."""
    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    with contextlib.suppress(OperationalError):
        record = await asyncio.to_thread(_stored_record, database, _call_id(call_id))
        if record is not None and record.seq == 0 and record.params is not None:
            _encrypted(settings)  # its start writes the order's secrets into Temporal's history
            try:
                return await start_unstarted(ApiContext(settings, database, client), record, signal)
            except ApiError as err:  # Temporal could not say it started: a retry finds out
                _failed(f"call order {call_id} could not be started: {err.message}")
    return False


def _signal_command(signal: str, doc: str) -> None:
    def command(call_id: str) -> None:
        async def send(client: Client) -> None:
            handle = _handle(client, call_id)
            status = None
            try:
                status = await handle.query("status", rpc_timeout=QUERY_TIMEOUT)
            except RPCError as err:  # no answer: signal all the same, unless there is no workflow
                if err.status == RPCStatusCode.NOT_FOUND and (stored := await _stored_if_reachable(call_id)):
                    status = stored.status  # a campaign's row not yet started: what the API says of it
            except WorkflowQueryFailedError:
                pass
            if status and (
                refused := signal_refused(handle.id.removeprefix(ORDER_WORKFLOW_PREFIX), status, signal)
            ):
                stderr.print(f"[red]{escape(refused)}[/]", soft_wrap=True)  # as the API's 409
                raise typer.Exit(2)
            try:
                await handle.signal(signal)
            except RPCError as err:  # no workflow: unless its POST /call died before starting it
                if err.status != RPCStatusCode.NOT_FOUND or not await _started_by(client, call_id, signal):
                    raise
            console.print(escape(f"{signal.replace('_', '-')} sent to {call_id}"))

        _on_the_order(call_id, send)

    command.__doc__ = doc
    app.command(name=signal.replace("_", "-"))(command)


_signal_command("cancel", "Cancel a call order (a call in progress ends gracefully).")
_signal_command("force_now", "Call now: skip the wait, scheduled_at and calling windows.")
_signal_command("pause", "Pause a call order before its next attempt.")
_signal_command(
    "resume", "Resume a paused call order; its next attempt keeps its time while that is still ahead."
)


@app.command(name="voice-agent")
def voice_agent(
    dev: Annotated[bool, typer.Option(help="Development mode: debug logs, no idle job processes.")] = False,
    port: Annotated[int, typer.Option(help="Health-check HTTP port.", min=0, max=65535)] = 8081,
) -> None:
    """Run the LiveKit voice agent that holds the calls (OUTDIAL_TELEPHONY=livekit; see README)."""
    from workers.voice_agent import run_voice_agent

    run_voice_agent(Settings.load(), dev=dev, port=port)


campaign_app = typer.Typer(help="Campaigns: a CSV of contacts, one call order per row.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


def read_contacts(path: Path) -> list[dict]:
    """CSV with a `to_phone_number` column; `metadata.<key>` columns go to the order's metadata (e.g.
    `metadata.simulation`), every other column is a prompt variable. A ValueError says why a file is
    not such a CSV. A row short of cells has the missing ones empty; cells past the header's are
    ignored (a bad row is the campaign's to skip, not the file's to refuse)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:  # the line of the byte itself (csv reads ahead of its line count)
        where = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"not UTF-8 text (line {where}: {err.reason})") from None
    # `to_phone_number, name` as typed by hand: the column is `name` (it filled no {{name}}), its cells too
    reader = csv.DictReader(io.StringIO(text, newline=""), restval="", skipinitialspace=True)
    try:
        columns = reader.fieldnames = [column.strip() for column in reader.fieldnames or []]
        if not {"to_phone_number", "phone_number"} & set(columns):
            raise ValueError(f"no to_phone_number column (its columns: {', '.join(columns) or 'none'})")
        # columns without a name (a spreadsheet's empty ones) are dropped, however many
        if repeated := sorted({c for c in columns if c.strip() and columns.count(c) > 1}):
            raise ValueError(f"columns named twice: {', '.join(repeated)} (one would hide the other)")
        contacts = []
        for row in reader:  # cells past the header's are dropped; spaces around a cell are not part of it
            line = {name: value.strip() for name, value in row.items() if name is not None}
            if not any(line.values()):  # `,,,`: a spreadsheet's blank row
                continue
            number = line.pop("to_phone_number", None) or line.pop("phone_number", None) or ""
            metadata = {
                k.removeprefix("metadata.").strip(): v for k, v in line.items() if k.startswith("metadata.")
            }
            variables = {k: v for k, v in line.items() if k and not k.startswith("metadata.")}
            contacts.append(
                {"to_phone_number": number, "prompt_variables": variables, "metadata": metadata or None}
            )
    except csv.Error as err:  # a cell past csv's size limit, say
        raise ValueError(f"line {reader.line_num + 1}: {err}") from None
    return contacts


def _api_errors(fn):  # type: ignore[no-untyped-def]
    """An ApiError (404, 409, 422) is a message and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except (ApiError, ValidationError) as err:
            message = err.message if isinstance(err, ApiError) else describe(err)
            stderr.print(f"[red]{escape(message)}[/]", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@campaign_app.command("create")
@_api_errors
def campaign_create(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: to_phone_number, prompt variables, metadata.<key>.", exists=True, dir_okay=False
        ),
    ],
    name: Annotated[str, typer.Option(help="The campaign's name.")],
    assistant_id: Annotated[
        str | None, typer.Option(help="A saved assistant (else one from --prompt).")
    ] = None,
    prompt: Annotated[str, typer.Option(help="The prompt of a new assistant.")] = "Offer {{name}} a demo.",
    max_concurrent_calls: Annotated[int, typer.Option(help="Calls in progress at once, at most.")] = 10,
    retry_json: Annotated[
        Path | None,
        typer.Option("--retry", help="A call_retry_config JSON file.", exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Create a campaign from a CSV (nothing is dialed until `outdial campaign launch`)."""
    from api import campaign_store
    from api.store import new_id, save_assistant
    from models.campaign import CampaignCreateParams
    from models.tables import AssistantRecord

    try:
        contacts = read_contacts(file)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="FILE") from None
    try:
        retry = json.loads(retry_json.read_text()) if retry_json else None
    except ValueError as err:
        raise typer.BadParameter(f"not JSON ({err})", param_hint="--retry") from None
    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    org = settings.organization_id
    params = CampaignCreateParams.model_validate(  # before a new assistant is saved: none left if refused
        {
            "name": name,
            "assistant_id": assistant_id or new_id(),
            "contacts": contacts,
            "max_concurrent_calls": max_concurrent_calls,
            "call_retry_config": retry,
        }
    )
    if assistant_id is None:
        config = {"prompt": prompt}
        save_assistant(
            database, AssistantRecord(id=params.assistant_id, organization_id=org, name=name, config=config)
        )
    campaign, skipped = campaign_store.create_campaign(database, settings, org, params)
    console.print(
        f"campaign [bold]{campaign.id}[/] created: {campaign.row_count} rows, {len(skipped)} skipped"
    )
    for skip in skipped:
        console.print(escape(f"  row {skip.row_index} ({skip.phone_number}): {skip.reason}: {skip.message}"))


@campaign_app.command("launch")
@_api_errors
def campaign_launch(
    campaign_id: str,
    scheduled_at: Annotated[str | None, typer.Option(help="ISO 8601; default: now.")] = None,
) -> None:
    """Launch every row not launched yet (paced; each then waits for its own calling window)."""
    from api.campaigns import launch_campaign
    from models.campaign import CampaignLaunchParams

    settings = Settings.load()
    params = CampaignLaunchParams.model_validate({"mode": "ai_first", "scheduled_at": scheduled_at})

    async def main() -> None:
        database = Database.for_url(settings.database_url)
        client = await _connected(settings)
        result = await launch_campaign(
            client, settings, database, settings.organization_id, campaign_id, params
        )
        console.print(JSON(result.model_dump_json()))

    asyncio.run(main())


@campaign_app.command("status")
@_api_errors
def campaign_status(campaign_id: str) -> None:
    """Rows by status and outcome, attempts, reached-human rate; and the latest launch's progress."""
    from api import campaign_stats, campaign_store
    from models.campaign import campaign_workflow_id

    settings = Settings.load()
    database = Database.for_url(settings.database_url)
    record = campaign_store.get_campaign(database, settings.organization_id, campaign_id)
    summary = campaign_stats.summarize(campaign_stats.row_facts(database, record.id))
    rate = summary.reached_human_rate
    status = campaign_stats.campaign_status(record, summary)
    console.print(
        f"[bold]{escape(record.name)}[/] ({status}): {summary.rows} rows, "
        f"{summary.attempts} attempts, reached a human: {summary.reached_human}"
        + (f" ({rate:.0%} of those called)" if rate is not None else "")
    )
    console.print(f"rows: {summary.row_stats.model_dump()}")
    console.print(f"by status: {dict(summary.by_status)}  by outcome: {dict(summary.by_outcome)}")

    async def progress() -> None:
        with contextlib.suppress(Exception):  # the workflow may have ended long ago
            client = await connect(settings)
            live = await client.get_workflow_handle(campaign_workflow_id(record.id)).query("progress")
            # each run (a relaunch, or a pause or resume after the launch ended) counts from zero: the
            # rows above are the totals
            console.print(f"the campaign workflow's latest run (counts its own): {live}")

    asyncio.run(progress())


def _campaign_signal(signal: str, doc: str) -> None:
    def command(campaign_id: str) -> None:
        from api.campaigns import steer_campaign

        settings = Settings.load()

        async def main() -> None:
            database = Database.for_url(settings.database_url)
            client = await _connected(settings)
            await steer_campaign(client, settings, database, settings.organization_id, campaign_id, signal)
            console.print(escape(f"{signal} sent to campaign {campaign_id}"))

        asyncio.run(main())

    command.__doc__ = doc
    campaign_app.command(name=signal)(_api_errors(command))


_campaign_signal("pause", "Pause a campaign: calls in progress finish, then their orders wait.")
_campaign_signal("resume", "Resume a paused campaign.")
_campaign_signal(
    "cancel", "Cancel a campaign: rows not started and waiting orders; calls in progress finish."
)


def main() -> None:
    """The `outdial` command. It ends with `os._exit` once the command is done (its stack stopped, its
    output flushed): the Temporal SDK's Rust threads may still call into Python while the interpreter
    finalizes, which aborts the process ("Fatal Python error: PyGILState_Release", temporalio/sdk-python
    #300): 2 of 30 `outdial worker` stopped by SIGTERM under load did, exit code -6 instead of 0."""
    try:
        app()
        code: object = 0
    except SystemExit as exit:
        code = exit.code
    except (ConfigError, CodecKeyError) as err:  # what the environment or temporal-dev.yaml says
        stderr.print(f"[red]{escape(str(err))}[/]", soft_wrap=True)
        code = 1
    except OperationalError as err:  # any command that reads or writes it: a line, not a traceback
        stderr.print(
            f"[red]{escape(unavailable(Settings.load().database_url, err))}[/]",
            soft_wrap=True,
        )
        code = 1
    if code is not None and not isinstance(code, int):  # sys.exit("message"), as Python itself shows it
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)

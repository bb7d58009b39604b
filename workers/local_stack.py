"""The local stack of `outdial dev` and `make demo`, all on 127.0.0.1: the Temporal dev server (unless one
already answers at TEMPORAL_ADDRESS), the payload codec server the Web UI decodes through, an SMTP sink
for outcome emails, a worker, and the HTTP API. Ports and files come from temporal-dev.yaml's
`local_stack`; everything stops when the block ends.

Payloads are encrypted by default here: the key is OUTDIAL_CODEC_KEY, else `.outdial/codec.key` (made
once, mode 0600), so the Web UI and `temporal workflow show` show ciphertext unless they go through
the codec server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
from collections.abc import AsyncIterator
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError
from temporalio.client import Client

from activities.providers import check_providers, provider_warnings
from activities.webhook_secrets import signing_secrets
from api import create_app
from api.auth import seed_dev_organization
from api.server import ApiServer, listenable
from models.settings import Settings, config_file_shown
from models.tables import Database, unavailable
from workers.codec import ensure_dev_codec_key, start_codec_server
from workers.devserver import start_dev_server, stop_dev_server
from workers.mailsink import MailSink, start_mail_sink
from workers.worker import connect, create_worker, missing_namespace, register_search_attributes

LOOPBACK = "127.0.0.1"


@dataclass
class LocalStack:
    """What a running local stack offers: its client, the settings it runs with, and its services."""

    client: Client
    settings: Settings
    api_url: str
    api_key: str
    codec_url: str
    mail: MailSink | None  # None when OUTDIAL_SMTP_HOST names a real server
    webhook_secret: str  # the local organization's (OUTDIAL_WEBHOOK_SECRET if set)

    def ui_url(self) -> str:
        """Where the Web UI lists the workflows; a Temporal outdial did not start has its own, unknown
        here unless OUTDIAL_TEMPORAL_UI_URL says it (the dev server's `ui_port` was printed: no UI there)."""
        if not self.settings.temporal_ui_url:
            return "that of the Temporal already running (set OUTDIAL_TEMPORAL_UI_URL to have it here)"
        base = self.settings.temporal_ui_url.rstrip("/")
        return f"{base}/namespaces/{self.settings.temporal_namespace}/workflows"


def local_settings(settings: Settings) -> Settings:
    """The stack's own defaults on top of `settings`: an encryption key, local URLs allowed (unless
    OUTDIAL_ALLOW_PRIVATE_URLS or notifications.allow_private_urls says otherwise)."""
    local = settings.local_stack
    settings = ensure_dev_codec_key(settings, local.codec_key_file)
    given = "allow_private_urls" in settings.model_fields_set
    return settings.model_copy(
        update={
            "allow_private_urls": settings.allow_private_urls if given else local.allow_private_urls,
            # notifications link a call to its workflow in the dev server's Web UI
            "temporal_ui_url": settings.temporal_ui_url or f"http://localhost:{settings.dev_server.ui_port}",
        }
    )


ANSWERS_WITHIN_SECONDS = 5.0  # a Temporal already at temporal.address answers within it, even a remote one


class StackNotStarted(RuntimeError):
    """The local stack could not start (a port in use, the dev server failed): its message says why in
    a line, for the CLI to show instead of a traceback."""


def _refuse_if_taken(api_port: int) -> None:
    """The HTTP API's port, tried before the stack starts anything (uvicorn then binds it for good)."""
    if api_port and listenable(LOOPBACK, api_port):
        raise _taken("HTTP API", api_port, "local_stack.api_port")


def _taken(what: str, port: int, key: str) -> StackNotStarted:
    return StackNotStarted(f"{what}: port {port} on {LOOPBACK} is in use; set {key} in {config_file_shown()}")


async def _seeded(settings: Settings) -> str:
    """The dev organization and its API key, in a database that is migrated on the way."""
    try:
        return await asyncio.to_thread(seed_dev_organization, settings)
    except OperationalError as err:
        raise StackNotStarted(unavailable(settings.database_url, err)) from None


@contextlib.asynccontextmanager
async def local_stack(settings: Settings, console: Console) -> AsyncIterator[LocalStack]:
    ui_given = settings.temporal_ui_url is not None
    settings = local_settings(settings)
    check_providers(settings)
    for warning in provider_warnings(settings):
        console.print(f"[yellow]{escape(warning)}[/]", soft_wrap=True)
    local = settings.local_stack
    _refuse_if_taken(local.api_port)  # started last: its port is tried before anything starts
    key = await _seeded(settings)  # first: nothing to start if the database cannot be reached
    async with contextlib.AsyncExitStack() as stack:
        mail = None
        if not settings.smtp_host:
            mail = MailSink(local.mail_dir, on_message=lambda m: _announce_mail(console, m))
            try:
                server = await start_mail_sink(mail, host=LOOPBACK, port=local.smtp_sink_port)
            except OSError:
                raise _taken("SMTP sink", local.smtp_sink_port, "local_stack.smtp_sink_port") from None
            stack.push_async_callback(_close_server, server)
            port = server.sockets[0].getsockname()[1]
            settings = settings.model_copy(
                update={"smtp_host": LOOPBACK, "smtp_port": port, "smtp_tls": "none"}
            )
            console.print(
                f"SMTP sink on {LOOPBACK}:{port} (mail kept in {local.mail_dir}; "
                f"OUTDIAL_SMTP_HOST={LOOPBACK} OUTDIAL_SMTP_PORT={port} for other processes)"
            )
        try:
            codec = await start_codec_server(settings, host=LOOPBACK, port=local.codec_server_port)
        except OSError:
            raise _taken("codec server", local.codec_server_port, "local_stack.codec_server_port") from None
        stack.push_async_callback(codec.cleanup)
        codec_url = "http://{}:{}".format(*codec.addresses[0][:2])

        try:  # a program on that port that is not Temporal accepts the connection and never answers
            client = await asyncio.wait_for(connect(settings), ANSWERS_WITHIN_SECONDS)
            console.print(
                f"Temporal already runs at {settings.temporal_address}: for its Web UI to decode payloads, "
                f"set its codec endpoint to {codec_url} (Web UI settings, or --ui-codec-endpoint)"
            )
            if not ui_given:  # its UI is not the dev server's ui_port: no links to a page that is not there
                settings = settings.model_copy(update={"temporal_ui_url": None})
        except (RuntimeError, TimeoutError):
            console.print(
                f"[bold]starting Temporal dev server[/] (state in {settings.dev_server.db_filename})"
            )
            try:
                server_process = await start_dev_server(settings, codec_endpoint=codec_url)
            except RuntimeError as err:
                where = f"; set temporal.dev_server.port or ui_port in {config_file_shown()}"
                raise StackNotStarted(
                    f"{err}{where if 'address already in use' in str(err) else ''}"
                ) from None
            stack.callback(stop_dev_server, server_process)
            try:
                client = await connect(settings)
            except RuntimeError:  # the dev server listens where temporal.address does not point
                raise StackNotStarted(
                    f"the dev server started on port {settings.dev_server.port}, but Temporal does not "
                    f"answer at {settings.temporal_address}: set temporal.address (TEMPORAL_ADDRESS) to "
                    f"127.0.0.1:{settings.dev_server.port}, or temporal.dev_server.port to its port"
                ) from None
        if problem := await missing_namespace(client, settings.temporal_address):
            raise StackNotStarted(problem)
        console.print(
            f"payloads encrypted (AES-256-GCM); codec server {codec_url} for the Web UI and "
            f"`temporal workflow show --codec-endpoint {codec_url}`"
        )
        await register_search_attributes(client)
        await stack.enter_async_context(
            create_worker(client, task_queue=settings.task_queue, settings=settings)
        )
        console.print(
            f"worker on task queue [bold]{settings.task_queue}[/] "
            f"(telephony: {settings.telephony}, analyzer: {settings.analyzer})"
        )
        database = Database.for_url(settings.database_url)
        [secret, *_] = await asyncio.to_thread(signing_secrets, settings, database, settings.organization_id)
        app = create_app(settings, temporal_client=client)
        try:
            api_server = await stack.enter_async_context(ApiServer(app, port=local.api_port))
        except RuntimeError:  # uvicorn logged why: the port, most likely
            raise _taken("HTTP API", local.api_port, "local_stack.api_port") from None
        console.print(
            f"HTTP API (Revox-compatible): [link]{api_server.url}[/] (docs: {api_server.url}/docs)\n"
            f'API key: [bold]{key}[/]  e.g. Revox(api_key=..., base_url="{api_server.url}")\n'
            "webhook signing secret: `outdial webhook-secret show`"
        )
        yield LocalStack(
            client=client,
            settings=settings,
            api_url=api_server.url,
            api_key=key,
            codec_url=codec_url,
            mail=mail,
            webhook_secret=secret,
        )


def _announce_mail(console: Console, message: email.message.EmailMessage) -> None:
    console.print(
        f"[bold green]mail received[/] by the SMTP sink: to {escape(str(message['To']))}: "
        f"{escape(str(message['Subject']))}"
    )


async def _close_server(server: asyncio.base_events.Server) -> None:
    server.close()
    await server.wait_closed()

"""`create_app(settings)`: the FastAPI application of the Revox-compatible API.

The official client works against it unchanged: `Revox(api_key=..., base_url="http://127.0.0.1:8000")`.
OpenAPI at `/openapi.json`, interactive docs at `/docs`. The database is migrated at start (Alembic
`upgrade head`), so a fresh machine just works. If it is unreachable then, the API starts all the same
and answers 503 until it is back, as it does while Temporal is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.client import Client

from api import (
    account,
    assistants,
    call_records,
    calls,
    campaigns,
    orphans,
    phone_numbers,
    voices,
    webhooks,
)
from api.context import ApiContext
from api.errors import install_error_handlers
from models.settings import Settings
from models.tables import Database, unavailable

log = logging.getLogger(__name__)

# Read before anything else (the API key included), so it bounds what anyone can make the API hold in
# memory; far above what a request needs (an order over Temporal's 2 MB payload limit is a 413 anyway).
MAX_BODY_BYTES = 16 * 1024 * 1024

DESCRIPTION = """Outbound AI phone calls, Revox-compatible: every call order is a durable Temporal
workflow. Authenticate with `Authorization: Bearer <key>` (`outdial apikey create`, or the key
`outdial dev` prints). Errors are JSON: `{"error": {"type", "message", "details"?}}`."""


class HeadAsGet:
    """HEAD answered as GET wherever GET is (RFC 9110; a 405's `Allow` says so): the server, which sees
    the request as HEAD, sends the headers only. No HEAD operations crowd the OpenAPI document."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    temporal_client: Client | None = None,
    database: Database | None = None,
) -> FastAPI:
    """The API for `settings` (default: environment, then temporal-dev.yaml). Pass a connected
    `temporal_client` to share one (the dev stack does); otherwise the API connects on first use."""
    settings = settings or Settings.load()
    database = database or Database.for_url(settings.database_url)
    context = ApiContext(settings, database, temporal_client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(database.migrate)  # else on first use, by every request until it works
        except OperationalError as err:
            log.warning("%s (answering 503 until it is up)", unavailable(database.url, err))
        sweeper = asyncio.create_task(orphans.sweeping(context))  # rows of starts a killed API never made
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(
        max_body_size=MAX_BODY_BYTES,
        title="outdial",
        version="0.1.0",
        summary="Revox-compatible outbound AI phone calls on Temporal",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.context = context
    app.add_middleware(HeadAsGet)
    install_error_handlers(app)
    for module in (calls, call_records, assistants, campaigns, phone_numbers, voices, account, webhooks):
        app.include_router(module.router)
    return app

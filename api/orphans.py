"""Rows of orders that never started: a `POST /call` (no Idempotency-Key) writes its placeholder row
while its workflow starts, so an API killed in between leaves a row that says `initializing` for ever,
whose order no signal can reach (it has nothing to start it with). Its client got no answer and
retried: the order is the retry's. Each API forgets such rows at start-up and every few minutes."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import String, and_, cast, or_
from sqlmodel import select

from api import store
from api.calls import started_after_all
from api.closed_orders import sweep_closed
from api.context import ApiContext
from models.tables import CallOrderRecord, Database, utcnow

log = logging.getLogger(__name__)

# A start still on its way is answered (or given up) in seconds: a row this old has no start coming.
ORPHANED_AFTER = timedelta(minutes=2)
SWEEP_EVERY = timedelta(minutes=10)
PAGE = 200  # rows read at a time, oldest first
SWEEP_LIMIT = 5_000  # rows looked at in one sweep; the rest at the next


def unstarted_placeholders(
    database: Database, written_before: datetime, after: tuple[datetime, str] | None = None
) -> list[tuple[datetime, str]]:
    """A page of unkeyed placeholders no workflow wrote to, after the cursor `after` (a keyed one is
    its key's retry's; one kept after a start Temporal could not account for holds its params, to be
    started by a signal: the JSON column holds `null` for the others)."""
    record = CallOrderRecord
    query = (
        select(record.created_at, record.id)
        .where(
            record.status == "initializing",
            record.seq == 0,
            record.idempotency_key.is_(None),  # type: ignore[union-attr]
            record.campaign_id.is_(None),  # type: ignore[union-attr]
            or_(record.params.is_(None), cast(record.params, String) == "null"),  # type: ignore[union-attr]
            record.created_at < written_before,
        )
        .order_by(record.created_at, record.id)  # type: ignore[arg-type]
        .limit(PAGE)
    )
    if after is not None:  # (column comparisons: values bound as the columns store them)
        written, call_id = after
        query = query.where(
            or_(record.created_at > written, and_(record.created_at == written, record.id > call_id))
        )
    with database.session() as session:
        return [(created_at, call_id) for created_at, call_id in session.execute(query)]


async def forget_orphans(context: ApiContext) -> list[str]:
    """Delete the placeholders whose order Temporal does not have; the ids deleted. Page by page, so
    rows that stay (orders started whose worker has not written yet) never hide the ones after."""
    client = await context.temporal()
    orphans: list[str] = []
    cursor, seen = None, 0
    while seen < SWEEP_LIMIT:
        page = await context.db(unstarted_placeholders, context.database, utcnow() - ORPHANED_AFTER, cursor)
        for _, call_id in page:
            if await started_after_all(client, call_id) is False:  # not found (None: Temporal cannot say)
                await context.db(store.delete_placeholder, context.database, call_id)
                orphans.append(call_id)
        seen += len(page)
        if len(page) < PAGE:
            break
        cursor = page[-1]
    return orphans


async def sweeping(context: ApiContext) -> None:
    """`forget_orphans` now and every SWEEP_EVERY, for as long as the API runs; and the Calls of orders
    whose workflow was terminated (or failed, or timed out) are closed (`closed_orders`)."""
    while True:
        try:
            if orphans := await forget_orphans(context):
                log.warning(
                    "forgot %d call(s) whose POST /call died before starting them: %s",
                    len(orphans),
                    _ids(orphans),
                )
        except Exception as err:  # noqa: BLE001 — Temporal or the database down: the next sweep
            log.info("orphaned calls not swept: %s", err)
        try:
            client, settings = await context.temporal(), context.settings
            if closed := await sweep_closed(client, context.database, settings.task_queue, utcnow()):
                log.warning(
                    "closed %d call(s) whose workflow was terminated or failed: %s", len(closed), _ids(closed)
                )
        except Exception as err:  # noqa: BLE001 — likewise
            log.info("calls of closed workflows not swept: %s", err)
        await asyncio.sleep(SWEEP_EVERY.total_seconds())


def _ids(call_ids: list[str], shown: int = 20) -> str:
    """The ids an operator looks up, the first `shown` of them."""
    more = f" and {len(call_ids) - shown} more" if len(call_ids) > shown else ""
    return ", ".join(call_ids[:shown]) + more

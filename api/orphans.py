"""Rows of orders that never started: a `POST /call` (no Idempotency-Key) writes its placeholder row
while its workflow starts, so an API killed in between leaves a row that says `initializing` for ever,
whose order no signal can reach (it has nothing to start it with). Its client got no answer and
retried: the order is the retry's. Each API forgets such rows at start-up and every few minutes."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlmodel import select

from api import store
from api.calls import started_after_all
from api.context import ApiContext
from models.tables import CallOrderRecord, Database, utcnow

log = logging.getLogger(__name__)

# A start still on its way is answered (or given up) in seconds: a row this old has no start coming.
ORPHANED_AFTER = timedelta(minutes=2)
SWEEP_EVERY = timedelta(minutes=10)
SWEEP_LIMIT = 200  # the oldest first; the rest at the next sweep


def unstarted_placeholders(database: Database, written_before: datetime) -> list[str]:
    """Unkeyed placeholders no workflow wrote to (a keyed one is its key's retry's; one kept after a
    start Temporal could not account for holds its params, to be started by a signal)."""
    with database.session() as session:
        rows = session.execute(
            select(CallOrderRecord.id, CallOrderRecord.params)
            .where(
                CallOrderRecord.status == "initializing",
                CallOrderRecord.seq == 0,
                CallOrderRecord.idempotency_key.is_(None),  # type: ignore[union-attr]
                CallOrderRecord.campaign_id.is_(None),  # type: ignore[union-attr]
                CallOrderRecord.created_at < written_before,
            )
            .order_by(CallOrderRecord.created_at)  # type: ignore[arg-type]
            .limit(SWEEP_LIMIT)
        )
        return [call_id for call_id, params in rows if params is None]


async def forget_orphans(context: ApiContext) -> list[str]:
    """Delete the placeholders whose order Temporal does not have; the ids deleted."""
    client = await context.temporal()
    orphans = []
    for call_id in await context.db(unstarted_placeholders, context.database, utcnow() - ORPHANED_AFTER):
        if await started_after_all(client, call_id) is False:  # not found (None: Temporal cannot say)
            await context.db(store.delete_placeholder, context.database, call_id)
            orphans.append(call_id)
    return orphans


async def sweeping(context: ApiContext) -> None:
    """`forget_orphans` now and every SWEEP_EVERY, for as long as the API runs."""
    while True:
        try:
            if orphans := await forget_orphans(context):
                log.warning("forgot %d call(s) whose POST /call died before starting them", len(orphans))
        except Exception as err:  # noqa: BLE001 — Temporal or the database down: the next sweep
            log.info("orphaned calls not swept: %s", err)
        await asyncio.sleep(SWEEP_EVERY.total_seconds())

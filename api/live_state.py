"""A running order's live state, asked of its workflow (the `call` query), and not asked while nobody
answers: a query needs a worker and Temporal, so with every worker down (crashed, restarting), or
Temporal itself, each one waited out its timeout, and every read of a running order took 5-6 s before
it answered from the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from models import Call

log = logging.getLogger(__name__)
QUERY_TIMEOUT = timedelta(seconds=5)
ASK_AGAIN_AFTER = 10.0  # seconds without asking, after an unanswered query
UNANSWERED = (
    RPCStatusCode.CANCELLED,  # the client's timeout: no worker took the query
    RPCStatusCode.DEADLINE_EXCEEDED,  # the server's, likewise
    RPCStatusCode.UNAVAILABLE,  # no Temporal, after the client's retries until the timeout
)


class LiveState:
    """`await live.call(handle)`: the order's live Call, or None when it cannot be had now (the caller
    answers from the database). After a query goes unanswered, reads get None at once; once
    `ask_again_after` has passed, one read sends a query in the background, and its answer lets the
    next reads ask live again."""

    def __init__(
        self,
        *,
        timeout: timedelta = QUERY_TIMEOUT,
        ask_again_after: float = ASK_AGAIN_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout, self.ask_again_after, self._clock = timeout, ask_again_after, clock
        self._quiet_until: float | None = None  # set while queries go unanswered
        self._probe: asyncio.Task[Any] | None = None

    @property
    def answering(self) -> bool:
        return self._quiet_until is None

    async def call(self, handle: WorkflowHandle[Any, Any]) -> Call | None:
        if self._quiet_until is None:
            return await self._ask(handle)
        if self._probe is None and self._clock() >= self._quiet_until:
            self._probe = asyncio.create_task(self._ask_in_background(handle))
        return None

    async def _ask(self, handle: WorkflowHandle[Any, Any]) -> Call:
        try:
            # A closed order is rejected, not replayed: its row holds what it left (`closed_orders`).
            closed = QueryRejectCondition.NOT_OPEN
            live = await handle.query(
                "call", result_type=Call, rpc_timeout=self.timeout, reject_condition=closed
            )
        except RPCError as err:
            if err.status in UNANSWERED:
                if self._quiet_until is None:
                    log.warning(
                        "the query of %s went unanswered (%s): reads of running orders answer from the "
                        "database, and ask again every %s s",
                        handle.id,
                        err.message,
                        self.ask_again_after,
                    )
                self._quiet_until = self._clock() + self.ask_again_after
            raise
        if self._quiet_until is not None:
            log.info("queries are answered again: reads of running orders are live")
            self._quiet_until = None
        return live

    async def _ask_in_background(self, handle: WorkflowHandle[Any, Any]) -> None:
        try:
            with contextlib.suppress(Exception):  # unanswered: still quiet; anything else: ask again
                await self._ask(handle)
        finally:
            self._probe = None

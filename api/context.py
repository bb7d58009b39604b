"""What every request handler shares: settings, the database and the Temporal client."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request
from temporalio.client import Client

from api.errors import ApiError
from api.keys import VerifiedKeys
from api.live_state import LiveState
from models.settings import Settings
from models.tables import Database

log = logging.getLogger(__name__)
PLACING_THREADS = 4  # an order's steps take milliseconds: a burst of 50 is placed in a few rounds
P = ParamSpec("P")
T = TypeVar("T")


class ApiContext:
    """The API's dependencies. The Temporal client connects on first use (and again after a failure),
    so the API starts, and serves everything but call orders, while Temporal is still coming up."""

    def __init__(self, settings: Settings, database: Database, temporal: Client | None = None) -> None:
        self.settings = settings
        self.database = database
        self._temporal = temporal
        self._connecting = asyncio.Lock()
        self.verified_keys = VerifiedKeys()
        self.live = LiveState()
        # Placing an order has threads of its own: behind other requests' reads in the default pool (its
        # 6 threads on 2 cores held by 50 searches, an export), its checks outwaited the client's patience
        # (a 503 saying the database did not answer, with the database idle) and its row was late.
        self._placing = ThreadPoolExecutor(max_workers=PLACING_THREADS, thread_name_prefix="outdial-place")

    async def temporal(self) -> Client:
        if self._temporal is not None:
            return self._temporal
        async with self._connecting:
            if self._temporal is None:
                from workers.worker import connect

                try:
                    self._temporal = await connect(self.settings)
                except Exception as err:  # noqa: BLE001 — any connection failure is "unavailable"
                    log.warning("Temporal at %s unavailable: %s", self.settings.temporal_address, err)
                    raise ApiError(
                        503, "unavailable", f"Temporal at {self.settings.temporal_address} is unavailable"
                    ) from err
        return self._temporal

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking database function off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def place(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking database step of placing an order, on the threads kept for it."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._placing, call)

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run an order's checks, a short read: on SQLite in the loop itself (reads of a local file never
        wait for writers in WAL mode, and cost less than the hop to a thread), elsewhere like `place`."""
        if self.database.dialect == "sqlite":
            return fn(*args, **kwargs)
        return await self.place(fn, *args, **kwargs)


async def get_context(request: Request) -> ApiContext:
    """Async on purpose: FastAPI runs a plain `def` dependency in its thread pool (a thread hop)."""
    return request.app.state.context


# A handler's parameter for the context: `context: Context`.
Context = Annotated[ApiContext, Depends(get_context)]

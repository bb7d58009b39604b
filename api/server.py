"""Serving the API with uvicorn inside an existing event loop, next to a worker (the dev stack, tests),
or on its own (`outdial api`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType

import uvicorn
from fastapi import FastAPI


def listenable(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port (the OS's reason), or None: tried before anything
    starts, so that a port in use is a line of ours, not uvicorn's after the rest has started."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as err:
        return err.strerror or str(err)
    return None


class ApiServer:
    """`async with ApiServer(app, port=0) as server:` serves until the block ends; `server.url` is
    where (port 0 picks a free port). Signals are left to the caller: Ctrl-C stops the whole stack."""

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"
    ):
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._task: asyncio.Task[None] | None = None
        self.host = host

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self._serve())
        while not self._server.started:
            if self._task.done():  # e.g. the port is taken: uvicorn logged why and gave up
                self._task.result()
                raise RuntimeError(f"the API could not listen on {self.host}:{self._server.config.port}")
            await asyncio.sleep(0.02)
        return self

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:  # how uvicorn gives up at start (it logged why): not a reason to end this process
            pass

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

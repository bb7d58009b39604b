"""The lightest HTTP client there is for timing a server: one kept-alive HTTP/1.1 connection, each request
written as bytes prepared before the clock starts, each answer parsed by httptools (uvicorn's C parser).

A benchmark of an API should time the API, not its client: aiohttp's client spends about as much of
each request in its own Python (building the request, serializing the JSON, its response object) as
the API spends refusing a bad body, and that cost does not belong to the API or to Temporal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType

import httptools


@dataclass
class Answer:
    """What came back: the status, the headers (names lower-cased) and the whole body."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False

    # httptools' parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class RawHttp:
    """`async with RawHttp(host, port, headers) as http:` then `await http.send(http.request(...))`."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> RawHttp:
        await self._connect()
        return self

    async def _connect(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        self._streams = await asyncio.open_connection(self.host, self.port)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._streams is not None:
            self._streams[1].close()

    def request(self, method: str, path: str, json_body: bytes = b"") -> bytes:
        """The request's bytes, to prepare once and send many times."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._headers}"
        if json_body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(json_body)}\r\n"
        return f"{head}\r\n".encode() + json_body

    async def send(self, request: bytes) -> Answer:
        assert self._streams is not None, "use RawHttp in `async with`"
        if self._streams[0].at_eof():  # the server closed the connection while it idled (uvicorn: after 5 s)
            await self._connect()
        reader, writer = self._streams
        answer = Answer()
        parser = httptools.HttpResponseParser(answer)
        writer.write(request)
        while not answer.complete:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(f"{self.host}:{self.port} closed the connection")
            parser.feed_data(data)
        answer.status = parser.get_status_code()
        return answer

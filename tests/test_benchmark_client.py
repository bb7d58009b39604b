"""The benchmarks' HTTP client: a benchmark must not die because a server closed an idle connection."""

from __future__ import annotations

import asyncio
import time

from benchmarks.raw_http import RawHttp

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request, then close, as uvicorn does to a connection idle past its keep-alive."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(ANSWER)
    await writer.drain()
    writer.close()


async def test_the_client_reconnects_when_the_server_closed_the_idle_connection() -> None:
    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RawHttp("127.0.0.1", port) as http:
        request = http.request("GET", "/")
        assert (await http.send(request)).body == b"ok"
        deadline = time.monotonic() + 10
        while not http._streams[0].at_eof():  # type: ignore[index]  # the close has reached the client
            assert time.monotonic() < deadline, "the server did not close the connection"
            await asyncio.sleep(0.01)
        answer = await http.send(request)
    assert (answer.status, answer.body) == (200, b"ok")

"""The thinnest HTTP front a workflow start can have, for `benchmarks/placement.py` to measure against.

    python -m benchmarks.thin_front --port 8123 --address localhost:7233 --namespace default --task-queue q

A raw ASGI app on uvicorn (configured as `outdial api` runs it): `POST /` starts a CallOrderWorkflow
with the request body as its input and the benchmark's options, then answers the workflow id, with the
start's own time in `Server-Timing` as the API gives it. No authentication, validation, database or
framework. What it adds to a bare `start_workflow` is what
putting any HTTP API in its own process in front of a start costs: the request's two extra hops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


App = Callable[[Scope, Receive, Send], Awaitable[None]]


def thin_app(address: str, namespace: str, task_queue: str) -> App:
    client: Client | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            converter = pydantic_data_converter  # as the benchmark's own client
            client = await Client.connect(address, namespace=namespace, data_converter=converter)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] != "POST":  # GET answers 404: how the benchmark sees the front is up
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert client is not None
        started = time.perf_counter()
        handle = await client.start_workflow(
            "CallOrderWorkflow",
            json.loads(body),
            id=f"call-{uuid.uuid4()}",
            task_queue=task_queue,
            memo={"organization_id": "thin"},
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary="call +33612345678",
        )
        timing = f"start_workflow;dur={(time.perf_counter() - started) * 1000:.3f}".encode()
        answer = json.dumps({"id": handle.id}).encode()
        headers = [(b"content-type", b"application/json"), (b"server-timing", timing)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    uvicorn.run(
        thin_app(args.address, args.namespace, args.task_queue),
        host="127.0.0.1",
        port=args.port,
        log_level="info",  # as `outdial api`: its access log included
        lifespan="on",
    )

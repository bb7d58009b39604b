"""Benchmark: placement latency, `POST /call` to workflow started, against a bare `start_workflow`.

    python benchmarks/placement.py [--orders 200]

The real FastAPI app (api.create_app) is served over a socket by ApiServer (uvicorn) on the real dev
server (in memory); an aiohttp client (the lightest at hand: httpx adds ~2 ms a request) posts the
seed's request body one order at a time with an API key: authentication, the order's resolution, the
placeholder row in SQLite, then `start_workflow`.
The baseline starts the same workflow with the same client options directly. Requests alternate
between the two so both see the same machine load. Reported: p50/p99 of each and their ratios (goal
<= 1.5). No worker runs: the orders stay queued, which is what "started" means here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import dev_server, orders, percentile


async def main(n: int) -> None:
    from api import create_app
    from api.auth import ensure_phone_number, issue_api_key
    from api.server import ApiServer
    from models.tables import Database

    body = orders.now().model_dump(mode="json", exclude_none=True)
    async with dev_server() as client:
        database_url = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-bench-')}/outdial.db"
        settings = orders.settings(database_url).model_copy(
            update={"task_queue": f"placement-{uuid.uuid4().hex[:6]}"}
        )
        database = Database.for_url(database_url)
        await asyncio.to_thread(database.migrate)
        key = issue_api_key(database, settings.organization_id)
        ensure_phone_number(database, settings.organization_id, settings.default_from_phone_number, None)
        app = create_app(settings, temporal_client=client, database=database)
        api_ms: list[float] = []
        bare_ms: list[float] = []
        async with (
            ApiServer(app, port=0) as server,
            aiohttp.ClientSession(server.url, headers={"Authorization": f"Bearer {key}"}) as http,
        ):
            for i in range(n + 10):  # the first 10 of each warm up connections and caches
                started = time.perf_counter()
                async with http.post("/call", json=body) as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                api = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                await client.start_workflow(
                    "CallOrderWorkflow",
                    orders.now(),
                    id=f"call-{uuid.uuid4()}",
                    task_queue=settings.task_queue,
                    memo={"organization_id": settings.organization_id},
                    static_summary="call +33612345678",
                )
                bare = (time.perf_counter() - started) * 1000
                if i >= 10:
                    api_ms.append(api)
                    bare_ms.append(bare)
    p50, p99 = percentile(api_ms, 50), percentile(api_ms, 99)
    b50, b99 = percentile(bare_ms, 50), percentile(bare_ms, 99)
    print(f"orders={n} each way, one at a time")
    print(f"POST /call -> started   p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    print(f"bare start_workflow     p50 {b50:6.1f} ms  p99 {b99:6.1f} ms")
    print(f"ratio                   p50 {p50 / b50:.2f}  p99 {p99 / b99:.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    asyncio.run(main(parser.parse_args().orders))

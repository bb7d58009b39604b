"""Benchmark: placement latency, `POST /call` to workflow started, against a bare `start_workflow`.

    python benchmarks/placement.py [--orders 300] [--server file|memory|both] [--api-in-process]

The API is `outdial api` in its own process, as it is deployed (uvicorn, its own Temporal client), on the
real dev server: keeping its state in a SQLite file as `outdial dev` runs it, then (by default, both) in
memory, where a start costs least and the API's own costs weigh most. The lightest client there is
(`benchmarks/raw_http.py`: one kept-alive connection, requests prepared before the clock starts; aiohttp's
client cost about 0.1 of an in-memory start of its own) posts the seed's request body one order at a time
with an API key: authentication, the order's checks and resolution, the placeholder row in SQLite written
while `start_workflow` runs. The baseline starts the same workflow with the API's options (REJECT_DUPLICATE
included) directly from this process. Each round also posts the same body with an invalid phone number: the
422 it gets is the floor any request pays (HTTP, middleware, routing, the API key, body validation), and the
same body to `benchmarks/thin_front.py`, which starts the same workflow behind the thinnest HTTP front there
is (a raw ASGI app, also in its own process): what any API in its own process pays, so what is outdial's own
shows. The four take turns going first in a round, so all see the same machine load and none is always the
one that wakes an idle server. Reported: p50/p99 of each, their ratios (goal <= 1.5), the floor's share of a
bare start, and from the `Server-Timing` headers the time the API's checks and its start took inside it, and
the start alone (`start_workflow`) inside the API and inside the thinnest front. Last, n of each
in a row: the CPU time per start of the process that makes it and of the dev server (Linux). No
worker runs: the orders stay queued, which is what "started" means here. --api-in-process serves the API
from this process's event loop instead (client, API and baseline then share one loop: for profiling; the
thinnest front stays a process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.server_timing import parse_server_timing
from benchmarks.common import child_pid, cpu_seconds, dev_server, orders, percentile
from benchmarks.raw_http import RawHttp
from models.settings import Settings
from workers.devserver import installed

CHECKOUT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def served(argv: list[str], port: int, workdir: str, env: dict[str, str]) -> AsyncIterator[int]:
    """An HTTP server process (`argv`, listening on `port`), from the moment it answers a GET."""
    # This checkout's modules, whichever checkout the venv's editable install points at.
    path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": path, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                async with RawHttp("127.0.0.1", port) as http:
                    await http.send(http.request("GET", "/openapi.json"))
                    break  # any answer: it serves
            assert process.poll() is None, f"{argv[0]} exited"
            assert time.monotonic() < deadline, f"{argv[0]} did not answer within 60 s"
            await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def api_process(
    settings: Settings, workdir: str, source: Path | None = None
) -> contextlib.AbstractAsyncContextManager[int]:
    """`outdial api` for `settings`, run from `workdir` (no temporal-dev.yaml, no codec key there); with
    `source`, the API of that source tree (a checkout of another revision) in this environment."""
    port = free_port()
    if source is None:
        command = installed("outdial")
        assert command, "the outdial command is not installed (make setup)"
        argv = [command]
    else:
        code = f"import sys; sys.path.insert(0, {str(source)!r}); from workers.cli import app; app()"
        argv = [sys.executable, "-c", code]
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "OUTDIAL_TASK_QUEUE": settings.task_queue,
        "OUTDIAL_DATABASE_URL": settings.database_url,
        "OUTDIAL_CODEC_KEY": "plaintext",  # as the bare start_workflow it is compared with
    }
    return served([*argv, "api", "--port", str(port)], port, workdir, env)


def thin_front_process(settings: Settings, workdir: str) -> contextlib.AbstractAsyncContextManager[int]:
    """`benchmarks/thin_front.py`: the same start behind the thinnest HTTP front, in its own process."""
    port = free_port()
    script = str(Path(__file__).resolve().parent / "thin_front.py")
    options = ["--address", settings.temporal_address, "--namespace", settings.temporal_namespace]
    argv = [sys.executable, script, "--port", str(port), *options, "--task-queue", settings.task_queue]
    return served(argv, port, workdir, {})


@contextlib.asynccontextmanager
async def api_in_process(settings: Settings, client: object) -> AsyncIterator[int]:
    from api import create_app
    from api.server import ApiServer

    async with ApiServer(create_app(settings, temporal_client=client), port=0) as server:  # type: ignore[arg-type]
        yield server.port


@dataclass
class Bench:
    """The dev server's client, the settings an API gets, its working directory and an API key."""

    client: Client
    settings: Settings
    workdir: str
    key: str

    async def start_bare(self) -> float:
        """A bare `start_workflow` with the API's options (REJECT_DUPLICATE included): milliseconds."""
        order = orders.now()  # the API validates its body within its timing; this is not timed
        started = time.perf_counter()
        await self.client.start_workflow(
            "CallOrderWorkflow",
            order,
            id=f"call-{uuid.uuid4()}",
            task_queue=self.settings.task_queue,
            memo={"organization_id": self.settings.organization_id},
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary="call +33612345678",
        )
        return (time.perf_counter() - started) * 1000


@contextlib.asynccontextmanager
async def bench_stack(server_file: bool, name: str) -> AsyncIterator[Bench]:
    """The real dev server (on a SQLite file or in memory), a migrated database with an API key and the
    default caller id, and the settings for an API against both (no worker: orders stay queued)."""
    from api.auth import ensure_phone_number, issue_api_key
    from models.tables import Database

    workdir = tempfile.mkdtemp(prefix=f"outdial-{name}-")
    async with dev_server(f"{workdir}/temporal.db" if server_file else None) as client:
        database_url = f"sqlite:///{workdir}/outdial.db"
        settings = orders.settings(database_url).model_copy(
            update={
                "task_queue": f"{name}-{uuid.uuid4().hex[:6]}",
                "temporal_address": client.service_client.config.target_host,
                "temporal_namespace": client.namespace,
            }
        )
        database = Database.for_url(database_url)
        await asyncio.to_thread(database.migrate)
        key = issue_api_key(database, settings.organization_id)
        ensure_phone_number(database, settings.organization_id, settings.default_from_phone_number, None)
        yield Bench(client, settings, workdir, key)


async def cpu_per_start(
    n: int, steps: dict[str, tuple[Callable[[], Awaitable[object]], int]]
) -> dict[str, tuple[float, float]]:
    """For each step (a start and the process that makes it): n in a row, and the CPU milliseconds per
    start that process and the dev server spent. On two cores a start keeps the dev server busy on more
    than one, so what the API spends beside it lengthens it."""
    server = child_pid("start-dev")
    spent: dict[str, tuple[float, float]] = {}
    for name, (step, pid) in steps.items():
        own, served_ = cpu_seconds(pid), cpu_seconds(server)
        for _ in range(n):
            await step()
        spent[name] = ((cpu_seconds(pid) - own) * 1000 / n, (cpu_seconds(server) - served_) * 1000 / n)
    return spent


async def run(n: int, server_file: bool, in_process: bool) -> None:
    body = orders.now().model_dump(mode="json", exclude_none=True)
    async with bench_stack(server_file, "placement") as bench:
        client, settings, workdir, key = bench.client, bench.settings, bench.workdir, bench.key
        api = api_in_process(settings, client) if in_process else api_process(settings, workdir)
        thin = thin_front_process(settings, workdir)
        refused_body = {**body, "phone_number": "not a phone number"}
        api_ms: list[float] = []
        # inside the API (Server-Timing): its checks, its start phase, and within it the start alone
        phases: dict[str, list[float]] = {"checks": [], "start": [], "start_workflow": []}
        bare_ms: list[float] = []
        floor_ms: list[float] = []
        thin_ms: list[float] = []
        thin_start_ms: list[float] = []  # the start alone, inside the thinnest front
        async with (
            api as api_port,
            thin as thin_port,
            RawHttp("127.0.0.1", api_port, {"Authorization": f"Bearer {key}"}) as http,
            RawHttp("127.0.0.1", thin_port) as thin_http,
        ):
            placing = http.request("POST", "/call", json.dumps(body).encode())
            refusing = http.request("POST", "/call", json.dumps(refused_body).encode())
            placing_thin = thin_http.request("POST", "/", json.dumps(body).encode())

            async def place() -> None:
                started = time.perf_counter()
                response = await http.send(placing)
                api_ms.append((time.perf_counter() - started) * 1000)
                assert response.status == 200, response.body
                timing = parse_server_timing(response.headers.get("server-timing", ""))
                for name, values in phases.items():
                    values.append(timing[name])

            async def start_bare() -> None:
                bare_ms.append(await bench.start_bare())

            async def refuse() -> None:  # the floor: the same request, refused at validation
                started = time.perf_counter()
                response = await http.send(refusing)
                floor_ms.append((time.perf_counter() - started) * 1000)
                assert response.status == 422, response.body

            async def place_thin() -> None:  # the same start behind the thinnest HTTP front
                started = time.perf_counter()
                response = await thin_http.send(placing_thin)
                thin_ms.append((time.perf_counter() - started) * 1000)
                assert response.status == 200, response.body
                timing = parse_server_timing(response.headers.get("server-timing", ""))
                thin_start_ms.append(timing["start_workflow"])

            steps = [place, start_bare, refuse, place_thin]
            for i in range(n + 10):  # the first 10 rounds warm up connections and caches
                turn = i % len(steps)  # each goes first, second, third and last in turn
                for step in steps[turn:] + steps[:turn]:
                    await step()
                if i == 9:
                    for samples in (api_ms, bare_ms, floor_ms, thin_ms, thin_start_ms, *phases.values()):
                        samples.clear()
            if not in_process:  # then n of each in a row, for the CPU each process spends on a start
                cpu = await cpu_per_start(
                    n,
                    {
                        "POST /call": (lambda: http.send(placing), child_pid("api")),
                        "thinnest front": (lambda: thin_http.send(placing_thin), child_pid("thin_front.py")),
                        "bare start": (bench.start_bare, os.getpid()),
                    },
                )
    p50, p99 = percentile(api_ms, 50), percentile(api_ms, 99)
    b50, b99 = percentile(bare_ms, 50), percentile(bare_ms, 99)
    f50, f99 = percentile(floor_ms, 50), percentile(floor_ms, 99)
    t50, t99 = percentile(thin_ms, 50), percentile(thin_ms, 99)
    server = "on a SQLite file" if server_file else "in memory"
    where = "in this process" if in_process else "as its own process"
    print(f"orders={n} each way, one at a time; dev server {server}; API {where}")
    print(f"POST /call -> started   p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    print(f"bare start_workflow     p50 {b50:6.1f} ms  p99 {b99:6.1f} ms")
    print(f"ratio                   p50 {p50 / b50:.2f}  p99 {p99 / b99:.2f}  (goal <= 1.5)")
    print(f"refused at validation   p50 {f50:6.1f} ms  p99 {f99:6.1f} ms  (HTTP, routing, key, body: 422)")
    print(f"floor / bare start      p50 {f50 / b50:.2f}")
    print(f"thinnest HTTP front     p50 {t50:6.1f} ms  p99 {t99:6.1f} ms  (raw ASGI, the start only)")
    print(f"thinnest front / bare   p50 {t50 / b50:.2f}  p99 {t99 / b99:.2f}  (any API in its own process)")
    print(f"POST /call / thinnest   p50 {p50 / t50:.2f}  (what outdial's API adds to that)")
    c50, s50 = percentile(phases["checks"], 50), percentile(phases["start"], 50)
    print(f"inside the API, p50     checks {c50:.2f} ms, start {s50:.2f} ms (placeholder written meanwhile)")
    print(f"start inside / bare     p50 {s50 / b50:.2f}")
    w50, ts50 = percentile(phases["start_workflow"], 50), percentile(thin_start_ms, 50)
    print(
        f"start_workflow alone    p50 {w50 / b50:.2f} of bare inside the API (placeholder beside it), ",
        end="",
    )
    print(f"{ts50 / b50:.2f} inside the thinnest front")
    print(f"the rest                p50 {p50 - c50 - s50:.2f} ms  (HTTP, key, body, the answer)")
    if not in_process:
        makers = ["the API", "the front", "this client"]
        for (name, (own, server)), who in zip(cpu.items(), makers, strict=True):
            label = "CPU per start, ms" if name == "POST /call" else ""
            print(f"{label:23} {who} {own:.2f} + dev server {server:.2f}  ({name}, {n} in a row)")


async def main(n: int, server: str = "both", in_process: bool = False) -> None:
    for server_file in {"file": [True], "memory": [False], "both": [True, False]}[server]:
        await run(n, server_file, in_process)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument(
        "--server",
        choices=["file", "memory", "both"],
        default="both",
        help="the dev server's state: in a SQLite file (as `outdial dev`), in memory, or one run of each",
    )
    parser.add_argument(
        "--api-in-process", action="store_true", help="serve the API from this process (for profiling)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.server, args.api_in_process))

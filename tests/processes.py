"""Real processes for fault tests and benchmarks: a file-backed Temporal dev server and `outdial worker`
processes, each started here and killed with SIGKILL when a test says so (no clean shutdown)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from models.settings import DevServerSettings, Settings
from models.tables import shown_url
from tests.helpers import eventually, free_ports
from workers import register_search_attributes
from workers.devserver import start_dev_server

CHECKOUT = str(Path(__file__).resolve().parent.parent)  # the code its processes run


@dataclass
class Stack:
    """A dev server with its SQLite file under `root`, and worker processes pointing at it."""

    root: Path
    task_queue: str = "call-orders"
    worker_env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        port, ui_port = free_ports(2)
        self.settings = Settings(
            temporal_address=f"127.0.0.1:{port}",
            dev_server=DevServerSettings(
                db_filename=str(self.root / "temporal.db"), port=port, ui_port=ui_port, headless=True
            ),
        )
        self.ring_ledger = self.root / "rings.jsonl"
        self.database_url = f"sqlite:///{self.root / 'outdial.db'}"

    async def start_server(self) -> None:
        """Start (or restart, on the same file and port) the dev server; return once it answers."""
        self.server = await start_dev_server(self.settings)

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    async def client(self) -> Client:
        client = await Client.connect(self.settings.temporal_address, data_converter=pydantic_data_converter)
        await register_search_attributes(client)
        return client

    async def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """`outdial worker` in its own process, isolated from the developer's configuration; returns
        once it polls (it prints its task queue after the worker started)."""
        log = self.root / f"worker-{len(self.workers) + 1}.log"
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "OUTDIAL_CONFIG": "/dev/null",
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "OUTDIAL_TASK_QUEUE": self.task_queue,
            "OUTDIAL_DATABASE_URL": self.database_url,
            "OUTDIAL_SIMULATED_RING_LEDGER": str(self.ring_ledger),
            "OUTDIAL_CODEC_KEY": "plaintext",  # as the test's own client reads them (no secrets here)
            "COLUMNS": "200",
            # This checkout's code, whatever checkout the venv's editable install names (a benchmark of
            # a worktree run with another's venv measured that other's worker).
            "PYTHONPATH": CHECKOUT,
            **self.worker_env,
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "outdial"), "worker"],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(process)

        async def output() -> str:
            if process.poll() is not None:
                raise AssertionError(f"worker exited ({process.returncode}): {log.read_text()}")
            return log.read_text(errors="replace")

        started = await eventually(output, lambda text: "worker on" in text, timeout=60)
        assert (
            f"; database {shown_url(environment['OUTDIAL_DATABASE_URL'])}" in started
        )  # the API's, it must be
        return process

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()

    async def stop(self) -> None:
        for process in [*self.workers, *([self.server] if self.server else [])]:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait)

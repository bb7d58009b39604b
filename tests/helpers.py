"""Helpers for tests: settings isolated from the developer's machine, polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from models.settings import Settings

T = TypeVar("T")


def settings_for_tests(**overrides: object) -> Settings:
    """Never read the developer's environment or temporal-dev.yaml; a database of its own."""
    database = f"sqlite:///{tempfile.mkdtemp(prefix='outdial-test-')}/outdial.db"
    return Settings.load(config_file="/nonexistent", env={}).model_copy(
        update={"database_url": database, **overrides}
    )


def free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range: each probe stays bound until all are
    picked, so the same port is not handed out twice (the codec server once took the dev server's),
    and no outgoing connection or port-0 server of a test running beside can take one before its
    server binds it (the kernel hands those out from the ephemeral range: one took an API's port)."""
    with contextlib.ExitStack() as probes:
        picked: list[int] = []
        while len(picked) < count:
            port = random.randrange(PORTS_FROM, _ephemeral_ports_from())
            probe = probes.enter_context(socket.socket())
            with contextlib.suppress(OSError):  # in use: another draw
                probe.bind(("127.0.0.1", port))
                picked.append(port)
        return picked


PORTS_FROM = 10_000  # above the well-known ports and what services of this machine may listen on


def _ephemeral_ports_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA range starts at 49152
        return 49_152


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """The workflow's current details, as the Web UI reads them (the SDK's built-in metadata query)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def eventually(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout: float = 20
) -> T:
    """Poll `probe` until `until(value)` holds, failing after `timeout` seconds (for real servers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if until(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def start_campaign(
    client: Client,
    campaign_id: str,
    organization_id: str,
    task_queue: str,
    *,
    workflow_id: str | None = None,
    signal: str = "launch",
    **campaign_input: Any,
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start a CampaignWorkflow as the API does, with the CampaignInput fields the API leaves
    at their defaults (batch size, pace, bounds) set by the test."""
    from models.campaign import CampaignInput
    from workflows.campaign import CampaignWorkflow

    return await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(campaign_id=campaign_id, organization_id=organization_id, **campaign_input),
        id=workflow_id or f"campaign-{campaign_id}",
        task_queue=task_queue,
        start_signal=signal,
    )


def activity_started_at(at: datetime, attempt: int = 1) -> ActivityEnvironment:
    """An activity context whose try number `attempt` started at `at` (the server's clock)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, started_time=at, attempt=attempt)
    return env

"""The Temporal worker: every workflow and activity of outdial on one task queue."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.calls import CallActivities
from activities.campaigns import CampaignActivities
from activities.compliance import ComplianceActivities
from activities.concurrency import ConcurrencyActivities
from activities.notify import notify_activities_from
from activities.persistence import DatabaseDoNotContactRegistry, PersistenceActivities
from activities.providers import analyzer_from, telephony_from
from models.settings import ConfigError, Settings, config_file_shown
from workers.codec import data_converter
from workers.http_logs import quiet_http_loggers
from workflows import search_attributes as sa
from workflows import workflow_runner
from workflows.call_order import CallOrderWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.concurrency import ConcurrencySemaphoreWorkflow
from workflows.notify import CallNotificationsWorkflow

log = logging.getLogger(__name__)
# Every workflow type a worker runs (and tests/test_replay.py replays: each needs a recorded history).
WORKFLOWS = [CallOrderWorkflow, ConcurrencySemaphoreWorkflow, CallNotificationsWorkflow, CampaignWorkflow]


async def connect(settings: Settings | None = None) -> Client:
    """A client with outdial's data converter, at TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE.

    TLS and the API key come from Temporal's own client configuration (`temporalio.envconfig`):
    TEMPORAL_API_KEY (TLS then defaults on, as Temporal Cloud needs), TEMPORAL_TLS,
    TEMPORAL_TLS_CLIENT_CERT_PATH / _KEY_PATH (mTLS), TEMPORAL_TLS_SERVER_CA_CERT_PATH, or a profile
    of the Temporal CLI's config file (TEMPORAL_PROFILE)."""
    settings = settings or Settings.load()
    try:
        options = ClientConfigProfile.load().to_client_connect_config()
    except OSError as err:  # a TLS certificate or key file that is not there
        raise ConfigError(
            f"Temporal's client configuration (TEMPORAL_TLS_*, TEMPORAL_PROFILE): {err}"
        ) from None
    options.update(target_host=settings.temporal_address, namespace=settings.temporal_namespace)
    converter = data_converter(settings)  # encrypted payloads when OUTDIAL_CODEC_KEY is set
    try:
        return await Client.connect(**options, data_converter=converter)
    except ValueError as err:  # no address at all (a port past 65535), a certificate of no use
        raise ConfigError(f"Temporal at {settings.temporal_address}: {err}") from None


async def missing_namespace(client: Client, address: str) -> str | None:
    """Why the client cannot work, when Temporal does not know its namespace (a mistyped one is a
    common first error), else None. Any other answer lets it go on: a key may be allowed to start
    workflows but not to describe."""
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return (
                f"Temporal at {address} has no namespace {client.namespace!r}: set TEMPORAL_NAMESPACE or "
                f"temporal.namespace in {config_file_shown()}, or create it "
                f"(temporal operator namespace create --namespace {client.namespace})"
            )
    return None


def draining(settings: Settings) -> timedelta:
    """How long `outdial worker`, stopped (a deploy), lets the activities it runs finish: a phone that
    rings is answered or not (a stop cancelled the dial, which hung up: an attempt lost, retried hours
    later); what still runs then is cancelled. A process killed meanwhile leaves the ring to the dial's
    retry, which watches it."""
    return timedelta(seconds=settings.livekit_ringing_timeout_secs + 15)


def create_worker(
    client: Client,
    *,
    task_queue: str = "call-orders",
    settings: Settings | None = None,
    **worker_options: Any,
) -> Worker:
    """All workflows and activities, with providers chosen by `settings` (read now, not at import).

    `worker_options` go to `temporalio.worker.Worker` (e.g. `max_cached_workflows` bounds memory).
    The namespace must know outdial's search attributes: `await register_search_attributes(client)`
    once (a sync constructor cannot), else every workflow task fails."""
    settings = settings or Settings.load()
    quiet_http_loggers()  # its activities send to URLs holding secrets
    calls = CallActivities(settings, telephony_from(settings), analyzer_from(settings))
    persistence = PersistenceActivities(settings)
    notify = notify_activities_from(settings)
    compliance = ComplianceActivities(DatabaseDoNotContactRegistry(settings))
    if settings.max_cached_workflows is not None:
        worker_options.setdefault("max_cached_workflows", settings.max_cached_workflows)
    # A heartbeat is how a cancellation reaches a ringing dial: sent as often as the dial beats (every
    # 3.3 s), not held back to 0.8 of its 10 s timeout, a cancelled call stops ringing within seconds.
    worker_options.setdefault("max_heartbeat_throttle_interval", timedelta(seconds=1))
    return Worker(
        client,
        task_queue=task_queue,
        workflow_runner=workflow_runner(),
        workflows=WORKFLOWS,
        activities=[
            calls.prepare_order,
            calls.dial,
            calls.converse,
            calls.hang_up,
            calls.analyze,
            persistence.persist_call,
            *notify.all(),
            compliance.remember_do_not_contact,
            compliance.check_contact_allowed,
            *ConcurrencyActivities(
                client,
                default_max=settings.concurrency_default_max,
                max_waiters=settings.concurrency_max_waiters,
            ).all(),
            *CampaignActivities(settings, client).all(),
        ],
        **worker_options,
    )


async def register_search_attributes(client: Client) -> None:
    """Register outdial's search attributes in the client's namespace if missing (idempotent).

    The dev stack passes them as server flags too; this covers the test servers and self-hosted
    clusters. Where the operator API is not allowed (Temporal Cloud), register them in the cloud UI.
    """
    namespace = client.namespace
    wanted = {key.name: key.indexed_value_type.value for key in sa.ALL}
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = {name: kind for name, kind in wanted.items() if name not in existing.custom_attributes}
    except RPCError:  # the time-skipping test server cannot list them, but can add them
        missing = wanted
    try:
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
    except RPCError as err:
        log.warning("could not register search attributes %s: %s", sorted(missing), err)

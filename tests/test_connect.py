"""`workers.connect`: where the worker, the API and the CLI reach Temporal, TLS and API key included."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from tests.helpers import settings_for_tests
from workers import connect


async def test_the_api_key_and_tls_come_from_temporals_own_client_configuration(
    time_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporal Cloud takes an API key over TLS; the names are Temporal's (temporalio.envconfig)."""
    monkeypatch.setenv("TEMPORAL_API_KEY", "tk-not-a-real-key")
    monkeypatch.setenv("TEMPORAL_TLS", "false")  # the local test server speaks plain gRPC
    settings = settings_for_tests().model_copy(
        update={
            "temporal_address": time_env.client.service_client.config.target_host,
            "temporal_namespace": time_env.client.namespace,
        }
    )
    client = await connect(settings)
    assert client.api_key == "tk-not-a-real-key" and not client.service_client.config.tls
    assert client.namespace == time_env.client.namespace
    with pytest.raises(RPCError) as answered:  # the key travels and the server answers
        await client.get_workflow_handle("call-none").describe()
    assert answered.value.status == RPCStatusCode.NOT_FOUND

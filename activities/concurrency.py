"""Activities of the concurrency semaphore: the parts that need the Temporal client.

- `concurrency_request_permit` (run by an order, through `PermitHolder.request`): signal-with-start
  of `ConcurrencySemaphoreWorkflow` (id `concurrency-<organization id>:<key>`) with the `acquire`
  signal, so the first order that needs a key starts its semaphore and every later one signals it.
- `concurrency_check_holders` (run by the semaphore, every liveness interval while it has holders):
  describes the holder workflows by workflow id (so the latest run: a holder that continued-as-new
  or was reset is still RUNNING) and reports those that no longer run (terminated, timed out,
  failed, cancelled, completed, not found).

Register both with the worker as `ConcurrencyActivities(client).<method>` (or `*.all()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from models.concurrency import HolderCheck, HolderCheckResult, PermitRequest, SemaphoreInput

SEMAPHORE_WORKFLOW = "ConcurrencySemaphoreWorkflow"
ACQUIRE_SIGNAL = "acquire"
# The server refused the request itself (a key it cannot name a workflow by): no retry can help.
INVALID_PERMIT_REQUEST = "InvalidPermitRequest"
DESCRIBE_PARALLELISM = 16


def semaphore_workflow_id(key: str) -> str:
    return f"concurrency-{key}"


def organization_key(organization_id: str, key: str) -> str:
    """The semaphore key of an organization's concurrency key: two organizations that both say "trunk"
    have two limits, and neither can set or exhaust the other's (organization ids hold no ':')."""
    return f"{organization_id}:{key}"


class ConcurrencyActivities:
    def __init__(self, client: Client, *, default_max: int = 1, max_waiters: int | None = None) -> None:
        self._client = client
        self._default_max = default_max  # the limit a key starts with when its first order gives none
        self._max_waiters = max_waiters  # the queue bound a key starts with (None: SemaphoreInput's)

    def all(self) -> list[Callable]:
        """The activity callables to register with a worker."""
        return [self.concurrency_request_permit, self.concurrency_check_holders]

    @activity.defn(name="concurrency_request_permit")
    async def concurrency_request_permit(self, request: PermitRequest) -> None:
        """Enqueue `request` at its key's semaphore, starting the semaphore if it does not run.

        Safe to retry: the semaphore ignores a second `acquire` for the same (holder, ticket)."""
        task_queue = request.semaphore_task_queue or activity.info().task_queue
        try:
            await self._client.start_workflow(
                SEMAPHORE_WORKFLOW,
                SemaphoreInput(
                    key=request.key,
                    max=request.max or self._default_max,
                    **({"max_waiters": self._max_waiters} if self._max_waiters else {}),
                ),
                id=semaphore_workflow_id(request.key),
                task_queue=task_queue,
                start_signal=ACQUIRE_SIGNAL,
                start_signal_args=[request],
                static_summary=f"Concurrency semaphore for key {request.key!r}",
            )
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT:
                raise ApplicationError(
                    f"concurrency key refused by Temporal: {err.message}",
                    type=INVALID_PERMIT_REQUEST,
                    non_retryable=True,
                ) from None
            raise

    @activity.defn(name="concurrency_check_holders")
    async def concurrency_check_holders(self, check: HolderCheck) -> HolderCheckResult:
        """Which of these workflows no longer run (by workflow id, i.e. the latest run of each)."""
        limit = asyncio.Semaphore(DESCRIBE_PARALLELISM)
        closed: dict[str, str] = {}

        async def one(workflow_id: str) -> None:
            async with limit:
                try:
                    # The raw call: only the status matters, and decoding the holder's search
                    # attributes (as `describe()` does) is neither needed nor always possible.
                    raw = await self._client.workflow_service.describe_workflow_execution(
                        DescribeWorkflowExecutionRequest(
                            namespace=self._client.namespace,
                            execution=WorkflowExecution(workflow_id=workflow_id),
                        )
                    )
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        closed[workflow_id] = "not_found"
                        return
                    raise
            status = WorkflowExecutionStatus(raw.workflow_execution_info.status)
            if status != WorkflowExecutionStatus.RUNNING:
                closed[workflow_id] = status.name.lower()

        await asyncio.gather(*(one(wid) for wid in dict.fromkeys(check.holder_workflow_ids)))
        return HolderCheckResult(closed=closed)

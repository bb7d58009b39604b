"""Temporal workflows and the deterministic logic they run (scheduling, retries)."""

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Validators in our models call phonenumbers (which lazily imports region data), pytz and
# email_validator while payloads are decoded inside the sandbox: pass them through, or a fresh worker
# fails the workflow task for any region it has not loaded yet.
PASSTHROUGH_MODULES = ("phonenumbers", "pytz", "email_validator")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox every outdial worker and replayer uses."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )

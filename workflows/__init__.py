"""Temporal workflows and the deterministic logic they run (scheduling, retries)."""

from workflows.sandbox import workflow_runner

__all__ = ["workflow_runner"]

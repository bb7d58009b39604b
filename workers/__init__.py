"""Process entry points: the Temporal worker (and its factory for tests and tools), the CLI.

The worker's names are imported on first use, so that `workers.entry` (the `outdial` command) starts
without loading the SDK, the workflows and every timezone before it can take Ctrl-C quietly."""

from __future__ import annotations

from typing import Any

__all__ = ["connect", "create_worker", "register_search_attributes"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from workers import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'workers' has no attribute {name!r}")

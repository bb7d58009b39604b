"""Process entry points: the Temporal worker (and its factory for tests and tools), the CLI."""

from workers.worker import connect, create_worker, register_search_attributes

__all__ = ["connect", "create_worker", "register_search_attributes"]

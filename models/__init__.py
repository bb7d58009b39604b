"""Pydantic models: the seed's request/response schemas, workflow I/O, and storage tables."""

from models.common import *  # noqa: F403
from models.retry import CallingWindow, CallRetryConfig

"""Which refusals of a workflow start no retry can change, shared by `POST /call` (a 413) and a
campaign's launch (the row skipped)."""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode


def too_large(err: RPCError) -> bool:
    """Over Temporal's payload limit (2 MB by default: INVALID_ARGUMENT naming the size), or past the
    server's gRPC message limit (4 MB: RESOURCE_EXHAUSTED, as a server under too much load also
    answers, without saying "larger than max")."""
    message = err.message.lower()
    if err.status == RPCStatusCode.INVALID_ARGUMENT:
        return "size" in message
    return err.status == RPCStatusCode.RESOURCE_EXHAUSTED and "larger than max" in message

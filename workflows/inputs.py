"""What a workflow takes from outside, held to its model: its input and its signals' arguments.

Sent past the API and the workers' own clients (the Temporal CLI or Web UI, a client of one's own), a
malformed one must not fail every workflow task for ever: decoded by the SDK into a typed parameter,
a wrong shape raises in the handler (a TypeError, a ValidationError), the task fails, is retried, and
fails again; a semaphore stuck that way holds every order of its key. So a malformed input fails the
workflow at once, typed and non-retryable, naming the fields; a malformed signal is logged and dropped,
as the SDK drops one it cannot decode at all.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from models.common import error_summary

M = TypeVar("M", bound=BaseModel)

INVALID_INPUT = "InvalidWorkflowInput"
ENCRYPTED = b"binary/encrypted"  # workers/codec.py's encoding


def invalid(err: ValidationError, what: str, failure_type: str) -> ApplicationError:
    """The failure for a value that does not fit its model: the validators' messages only (not the
    values given: those may be secrets)."""
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
    return ApplicationError(
        f"invalid {what}: {error_summary(fields)}", fields, type=failure_type, non_retryable=True
    )


def admitted_input(model: type[M], value: RawValue, failure_type: str = INVALID_INPUT) -> M:
    """The workflow's input as `model`, else a typed, non-retryable failure naming the fields."""
    try:
        admitted = workflow.payload_converter().from_payload(value.payload, model)
    except ValidationError as err:
        raise invalid(err, "input", failure_type) from None
    except Exception as err:  # noqa: BLE001 — an encoding the converter does not know, say
        if value.payload.metadata.get("encoding") == ENCRYPTED:
            raise  # this worker lacks the sender's codec key: the task fails, and waits for one that has it
        raise ApplicationError(
            f"invalid input: it cannot be read ({type(err).__name__})", type=failure_type, non_retryable=True
        ) from None
    if not isinstance(admitted, model):  # binary/plain: bytes, whatever the model
        raise ApplicationError(
            f"invalid input: {model.__name__} expected", type=failure_type, non_retryable=True
        )
    return admitted


def signal_argument(model: type[M], args: tuple[Any, ...], signal: str) -> M | None:
    """A signal's one argument as `model`, or None when it was sent another number of arguments or a
    value of another shape (logged: the sender's mistake, which the workflow outlives)."""
    if len(args) != 1:
        workflow.logger.warning("signal %s dropped: one argument expected, %d given", signal, len(args))
        return None
    try:
        return model.model_validate(args[0])
    except ValidationError as err:
        workflow.logger.warning("signal %s dropped: %s", signal, error_summary(err.errors()))
        return None

"""What long-lived processes print: a failure outdial raises on purpose in one line, a bug in full."""

from __future__ import annotations

import logging

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from workers.logs import OneLineFailures, configure_logging


async def _failed_as_the_sdk_logs_it(error: Exception) -> None:
    """The SDK's own log call for a failed activity try, made inside an activity as the worker makes it."""

    @activity.defn(name="deliver_webhook")
    async def deliver() -> None:
        try:
            raise error
        except Exception:
            activity.logger.warning("Completing activity as failed", exc_info=True)

    await ActivityEnvironment().run(deliver)


async def test_a_failure_raised_on_purpose_is_one_line_naming_its_order_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook receiver down printed some 20 lines of traceback per try, for 24 hours of tries."""
    configure_logging()
    assert any(isinstance(f, OneLineFailures) for f in logging.getLogger("temporalio.activity").filters)
    caplog.set_level(logging.INFO)
    unreachable = ApplicationError(
        "webhook http://hooks.example/x unreachable: ConnectError", type="WebhookUnavailable"
    )
    await _failed_as_the_sdk_logs_it(unreachable)
    await _failed_as_the_sdk_logs_it(ApplicationError("410 Gone", type="WebhookGone", non_retryable=True))
    await _failed_as_the_sdk_logs_it(KeyError("a bug"))
    expected, final, bug = caplog.records
    assert expected.exc_info is None and expected.getMessage().endswith(
        ": WebhookUnavailable: webhook http://hooks.example/x unreachable: ConnectError"
    )
    assert "'workflow_id': 'test'" in expected.getMessage()  # the order's, as the SDK names it
    assert final.exc_info is None and final.getMessage().endswith(": WebhookGone: 410 Gone (final)")
    assert bug.exc_info is not None and "a bug" not in bug.getMessage()  # its traceback says it


async def test_a_database_outage_is_one_line_per_try(caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL restarting for 20 s: 304 failed tries, each with a chained traceback of 110 lines."""
    from sqlalchemy.exc import OperationalError

    configure_logging()
    caplog.set_level(logging.INFO)
    down = OperationalError(
        "INSERT INTO call_orders ...", {}, ConnectionError("the database system is\n shutting down")
    )
    await _failed_as_the_sdk_logs_it(down)
    gone = OperationalError("INSERT ...", {}, ConnectionError("failed to resolve host 'db': [Errno -2] Name"))
    await _failed_as_the_sdk_logs_it(gone)  # a compose service restarting: its name resolves to nothing
    bug = OperationalError("SELECT nosuchcolumn ...", {}, ConnectionError("no such column: nosuchcolumn"))
    await _failed_as_the_sdk_logs_it(bug)  # SQLite's word for a schema mismatch: a bug, in full
    line, unresolved, in_full = caplog.records
    assert line.exc_info is None and unresolved.exc_info is None
    assert line.getMessage().endswith(": database unavailable: the database system is shutting down")
    assert in_full.exc_info is not None

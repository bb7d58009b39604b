"""What a long-lived outdial process (`outdial worker`, `api`, `dev`) prints: its own INFO lines, each
with its time, level and logger, and one line, not a traceback, for a failure it raised on purpose."""

from __future__ import annotations

import logging
import re

from sqlalchemy.exc import DBAPIError, OperationalError
from temporalio.exceptions import ApplicationError

from workers.http_logs import quiet_http_loggers

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("alembic", "mail.log")  # a line per migration step at every start; per SMTP command


class OneLineFailures(logging.Filter):
    """The SDK logs every failed activity try at WARNING with its traceback: a webhook receiver down
    printed some 20 lines per try, every try for 24 hours, an analysis endpoint failing 60 an hour per
    order. A failure outdial raised on purpose (an `ApplicationError`: its type and message say it all)
    becomes one line, after the SDK's own, which names the order's workflow and the try; any other
    exception, a bug, keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not str(record.msg).startswith("Completing activity as failed"):
            return True
        if isinstance(error, ApplicationError):
            final = " (final)" if error.non_retryable else ""
            said = f"{error.type or 'ApplicationError'}: {error.message}{final}"
        elif _database_down(error):  # an outage the activities wait out: 300 tries of 110 lines each
            said = f"database unavailable: {' '.join(str(getattr(error, 'orig', error)).split())[:300]}"
        else:
            return True
        record.msg = f"{record.msg}: {said}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


# What a database that is down, restarting or busy says (psycopg, SQLite); an OperationalError saying
# anything else (SQLite's "no such column": a schema mismatch, a bug) keeps its traceback.
_OUTAGE = re.compile(
    r"connection|connect to|server closed|shutting down|terminating|starting up|recovery mode|"
    r"resolve host|name resolution|translate host name|name or service not known|"
    r"database is locked|unable to open database|timeout|timed out",
    re.IGNORECASE,
)


def _database_down(error: BaseException | None) -> bool:
    """The database unreachable, restarting or locked: what README calls expected (workers retry their
    writes as any activity), not a bug."""
    if not isinstance(error, DBAPIError):
        return False
    return error.connection_invalidated or (
        isinstance(error, OperationalError) and bool(_OUTAGE.search(str(error.orig)))
    )


def configure_logging() -> None:
    """INFO and above to stderr (outdial's own lines were dropped: Python printed WARNING only, bare),
    the HTTP clients held at WARNING, and the activity failures outdial raises on purpose in one line."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=FORMAT)
    quiet_http_loggers()
    for name in QUIET_LIBRARIES:
        if logging.getLogger(name).level == logging.NOTSET:  # unless set on purpose, to debug it
            logging.getLogger(name).setLevel(logging.WARNING)
    activity_logger = logging.getLogger("temporalio.activity")
    if not any(isinstance(f, OneLineFailures) for f in activity_logger.filters):
        activity_logger.addFilter(OneLineFailures())

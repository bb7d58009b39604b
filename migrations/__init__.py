"""Alembic migrations of outdial's database (`models/tables.py`).

`upgrade_head(engine)` is what `Database.migrate()` runs, so a fresh machine needs no manual step; the
same migrations run from the command line with `alembic upgrade head` (alembic.ini at the repo root,
database from OUTDIAL_DATABASE_URL or temporal-dev.yaml).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from models.settings import ConfigError

log = logging.getLogger(__name__)
SCRIPT_LOCATION = str(Path(__file__).parent)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


ATTEMPTS = 6


def upgrade_head(engine: Engine) -> None:
    """Apply every migration not yet applied. Processes starting together take turns (PostgreSQL: an
    advisory lock; SQLite: BEGIN IMMEDIATE, waiting up to its busy timeout); one that still loses a race
    (tables created meanwhile, or a long migration past the timeout) tries again, waiting longer each
    time (1, 2, 4, 8, 16 s), and then finds the work done."""
    for attempt in range(ATTEMPTS):
        with engine.connect() as connection:  # a database that cannot be reached fails here, at once
            try:
                with connection.begin():
                    if connection.dialect.name == "postgresql":  # a migration waits for its locks
                        connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                    config = alembic_config()
                    config.attributes["connection"] = connection
                    if _newer_than_known(connection, config):
                        return
                    command.upgrade(config, "head")
                return
            except (OperationalError, IntegrityError, ProgrammingError, CommandError) as err:
                # (CommandError: a newer outdial migrated it while this one waited for the lock: the
                # next try sees its revision, `_newer_than_known`)
                if not_allowed := _not_allowed(err):
                    raise ConfigError(not_allowed) from None
                if attempt == ATTEMPTS - 1:
                    raise
        time.sleep(2**attempt)


def _not_allowed(err: Exception) -> str | None:
    """Why the database's user may not create outdial's tables, in a line, or None: no try can succeed
    (it was tried six times over 31 s, then a traceback of hundreds of lines)."""
    orig = getattr(err, "orig", None)
    if getattr(orig, "sqlstate", None) == "42501":  # PostgreSQL's insufficient_privilege
        reason = " ".join(str(orig).split())
        return (
            f"the database user may not create outdial's tables ({reason}): grant it CREATE on the "
            "schema (since PostgreSQL 15 only the database's owner has it: GRANT CREATE ON SCHEMA public "
            "TO <user>), or run `alembic upgrade head` once as a user that may"
        )
    if orig is not None and "readonly database" in str(orig):  # SQLite's file, or its folder, read-only
        return f"the SQLite database cannot be written ({orig}): let this user write its file and folder"
    return None


def _newer_than_known(connection: Connection, config: Config) -> bool:
    """Whether a newer outdial migrated the database past every revision this one knows (a rolling
    upgrade, or workers rolled back): it is used as it is, with a warning. Alembic refused it, and every
    database step of an older worker started then failed, a dial losing its attempt without a ring."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return False
    try:
        ScriptDirectory.from_config(config).get_revision(current)
        return False
    except CommandError:  # "Can't locate revision"
        pass
    log.warning(
        "the database is at revision %s, which this version does not know (a newer outdial migrated it): "
        "used as it is; stop the older processes once the upgrade is done",
        current,
    )
    return True

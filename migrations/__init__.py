"""Alembic migrations of outdial's database (`models/tables.py`).

`upgrade_head(engine)` is what `Database.migrate()` runs, so a fresh machine needs no manual step; the
same migrations run from the command line with `alembic upgrade head` (alembic.ini at the repo root,
database from OUTDIAL_DATABASE_URL or temporal-dev.yaml).
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

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
                    command.upgrade(config, "head")
                return
            except (OperationalError, IntegrityError, ProgrammingError):
                if attempt == ATTEMPTS - 1:
                    raise
        time.sleep(2**attempt)

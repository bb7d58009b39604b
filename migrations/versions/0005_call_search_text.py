"""What a search's free-text `query` matches: the values of each call (activities/persistence.py
`search_text`), not its JSON with every key name. Existing rows are filled from their stored Call.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from activities.persistence import search_text
from models.tables import NulFreeText

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_orders") as batch:
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    # NulFreeText as the model writes it: PostgreSQL's json held a stored NUL, its text cannot
    calls = sa.table(
        "call_orders",
        sa.column("id", sa.String),
        sa.column("call", sa.JSON),
        sa.column("search_text", NulFreeText),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(calls.c.id, calls.c.call)).all()
    for call_id, call in rows:
        connection.execute(
            calls.update().where(calls.c.id == call_id).values(search_text=search_text(call or {}))
        )


def downgrade() -> None:
    with op.batch_alter_table("call_orders") as batch:
        batch.drop_column("search_text")

"""A campaign's steerings numbered as they are stored: a pause and a resume sent together could be stored
in one order and reach the workflow in the other, the campaign then saying paused while its orders
called. The workflow applies a steering only if it is not older than the last it applied.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 08:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("steered", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("steered")

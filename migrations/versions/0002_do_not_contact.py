"""The do-not-contact registry: numbers an organization must not call again (activities/compliance.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 05:26:29.976892
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "do_not_contact",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("phone_number", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "phone_number"),
    )


def downgrade() -> None:
    op.drop_table("do_not_contact")

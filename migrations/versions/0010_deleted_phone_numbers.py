"""The caller ids an organization deleted, with their trunks (`DeletedPhoneNumberRecord`): an order or a
campaign row accepted with a number deleted before its first step dialled through the default trunk.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 19:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_phone_numbers",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("phone_number", sa.String(length=32), nullable=False),
        sa.Column("livekit_outbound_trunk_id", sa.String(length=200), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "phone_number"),
    )


def downgrade() -> None:
    op.drop_table("deleted_phone_numbers")

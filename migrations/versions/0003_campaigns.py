"""Campaigns: the campaign, its rows, and the campaign of each call order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("assistant_id", sa.String(length=64), nullable=False),
        sa.Column("from_phone_number", sa.String(length=32), nullable=True),
        sa.Column("call_retry_config", sa.JSON(), nullable=True),
        sa.Column("max_concurrent_calls", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("is_cancelled", sa.Boolean(), nullable=False),
        sa.Column("metadata_keys", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.Column("launched_at", sa.DateTime(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaigns_organization_id", "campaigns", ["organization_id"])
    op.create_table(
        "campaign_rows",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("phone_number", sa.String(length=64), nullable=False),
        sa.Column("input_data", sa.JSON(), nullable=False),
        sa.Column("row_metadata", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("skip_reason", sa.String(length=32), nullable=True),
        sa.Column("skip_message", sa.String(), nullable=True),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "row_index"),
    )
    op.create_index("ix_campaign_rows_campaign_id", "campaign_rows", ["campaign_id"])
    op.create_index("ix_campaign_rows_state", "campaign_rows", ["state"])
    with op.batch_alter_table("call_orders") as batch:
        batch.add_column(sa.Column("campaign_id", sa.String(length=64), nullable=True))
        batch.create_index("ix_call_orders_campaign_id", ["campaign_id"])


def downgrade() -> None:
    with op.batch_alter_table("call_orders") as batch:
        batch.drop_index("ix_call_orders_campaign_id")
        batch.drop_column("campaign_id")
    op.drop_index("ix_campaign_rows_state", "campaign_rows")
    op.drop_index("ix_campaign_rows_campaign_id", "campaign_rows")
    op.drop_table("campaign_rows")
    op.drop_index("ix_campaigns_organization_id", "campaigns")
    op.drop_table("campaigns")

"""A webhook signing secret per organization (activities/webhook_secrets.py), with the previous one kept
for the grace period after a rotation. Existing organizations get a fresh secret each.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 09:00:00.000000
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("previous_webhook_secret", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("webhook_secret_rotated_at", sa.DateTime(), nullable=True))
    organizations = sa.table(
        "organizations", sa.column("id", sa.String), sa.column("webhook_secret", sa.String)
    )
    connection = op.get_bind()
    for (organization_id,) in connection.execute(sa.select(organizations.c.id)).all():
        connection.execute(
            organizations.update()
            .where(organizations.c.id == organization_id)
            .values(webhook_secret="whsec_" + secrets.token_urlsafe(32))  # models.tables.new_webhook_secret
        )


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("webhook_secret_rotated_at")
        batch.drop_column("previous_webhook_secret")
        batch.drop_column("webhook_secret")

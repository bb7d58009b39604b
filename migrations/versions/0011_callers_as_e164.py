"""The caller ids of call orders stored before 0008 as E.164 writes them (0009 rewrote their recipients'
numbers only): an order placed from `+330159000001` kept it, and the `from_phone_numbers` filter, which
reads the number as stored (`+33159000001`), found none of them. The order's Call gets the number its
column has, and its search text both forms.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.common import canonical_number

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    orders = sa.table(
        "call_orders",
        sa.column("id", sa.String),
        sa.column("from_phone_number", sa.String),
        sa.column("call", sa.JSON),
        sa.column("search_text", sa.Text),
    )
    for order in connection.execute(sa.select(orders.c.id, orders.c.from_phone_number)).all():
        number = order.from_phone_number
        if not number or (canonical := canonical_number(number)) == number:
            continue
        call, text = connection.execute(
            sa.select(orders.c.call, orders.c.search_text).where(orders.c.id == order.id)
        ).one()
        connection.execute(
            orders.update()
            .where(orders.c.id == order.id)
            .values(
                from_phone_number=canonical,
                call={**call, "from_phone_number": canonical},
                search_text=f"{text}\n{canonical}",
            )
        )


def downgrade() -> None:
    pass  # the canonical form is what the earlier versions accepted too

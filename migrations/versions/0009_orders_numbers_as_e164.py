"""The numbers of call orders and campaign rows stored before 0008 as E.164 writes them (0008 rewrote the
do-not-contact list and the caller ids only): phone history and search kept one person under two numbers
(`+330612345678` and `+33612345678`), and a campaign row in the other form was launched though its
number was on the do-not-contact list (its order then errored). The order's Call gets the number its
column has, and its search text both forms. A campaign whose list held a number in both forms (two rows
then) keeps the first row not skipped; a later one not started yet is skipped as a repeat, as creating
the campaign now would (it was called twice), and its placeholder call goes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.common import canonical_number

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    rows = sa.table(
        "campaign_rows",
        *(sa.column(name, sa.String) for name in ("id", "campaign_id", "phone_number", "state", "call_id")),
        sa.column("row_index", sa.Integer),
        sa.column("skip_reason", sa.String),
        sa.column("skip_message", sa.Text),
    )
    first: dict[tuple[str, str], int] = {}  # (campaign, number) -> the row index that keeps it
    listed = sa.select(rows).where(rows.c.state != "skipped").order_by(rows.c.campaign_id, rows.c.row_index)
    for row in connection.execute(listed).all():
        canonical = canonical_number(row.phone_number)
        kept = first.setdefault((row.campaign_id, canonical), row.row_index)
        values: dict[str, object] = {"phone_number": canonical}
        if kept != row.row_index and row.state in ("not_launched", "pending"):
            values |= {
                "state": "skipped",
                "skip_reason": "duplicate_phone_number",
                "skip_message": f"the same number as row {kept}",
                "call_id": None,
            }
            if row.call_id:
                connection.execute(
                    sa.text("DELETE FROM call_orders WHERE id = :id AND seq = 0"), {"id": row.call_id}
                )
        if values != {"phone_number": row.phone_number}:
            connection.execute(rows.update().where(rows.c.id == row.id).values(**values))
    skipped = sa.select(rows.c.id, rows.c.phone_number).where(rows.c.state == "skipped")
    for row in connection.execute(skipped).all():
        if (canonical := canonical_number(row.phone_number)) != row.phone_number:
            connection.execute(rows.update().where(rows.c.id == row.id).values(phone_number=canonical))
    orders = sa.table(
        "call_orders",
        sa.column("id", sa.String),
        sa.column("to_phone_number", sa.String),
        sa.column("call", sa.JSON),
        sa.column("search_text", sa.Text),
    )
    for order in connection.execute(sa.select(orders.c.id, orders.c.to_phone_number)).all():
        if (canonical := canonical_number(order.to_phone_number)) == order.to_phone_number:
            continue
        call, text = connection.execute(
            sa.select(orders.c.call, orders.c.search_text).where(orders.c.id == order.id)
        ).one()
        connection.execute(
            orders.update()
            .where(orders.c.id == order.id)
            .values(
                to_phone_number=canonical,
                call={**call, "to_phone_number": canonical},
                search_text=f"{text}\n{canonical}",
            )
        )


def downgrade() -> None:
    pass  # the canonical form is what the earlier versions accepted too

"""The numbers of call orders and campaign rows stored before 0008 as E.164 writes them (0008 rewrote the
do-not-contact list and the caller ids only): phone history and search kept one person under two numbers
(`+330612345678` and `+33612345678`), and a campaign row in the other form was launched though its
number was on the do-not-contact list (its order then errored). The order's Call gets the number its
column has, and its search text both forms. A campaign whose list held a number in both forms (two rows
then) keeps the row already called, else one launched, else the first; the others not started yet are
skipped as repeats, as creating the campaign now would (they were called twice), and their placeholder
calls go; a cancelled row stays as it is.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 17:10:00.000000
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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
    for row in connection.execute(sa.select(rows.c.id, rows.c.phone_number)).all():
        if (canonical := canonical_number(row.phone_number)) != row.phone_number:
            connection.execute(rows.update().where(rows.c.id == row.id).values(phone_number=canonical))
    placeholders = sa.table("call_orders", sa.column("id", sa.String), sa.column("seq", sa.Integer))
    same: dict[tuple[str, str], list[sa.Row[Any]]] = defaultdict(list)  # (campaign, number) -> its rows
    listed = sa.select(rows).where(rows.c.state != "skipped").order_by(rows.c.campaign_id, rows.c.row_index)
    for row in connection.execute(listed).all():
        same[(row.campaign_id, row.phone_number)].append(row)
    for repeated in (found for found in same.values() if len(found) > 1):
        calls = [row.call_id for row in repeated if row.call_id]
        seq = dict(
            connection.execute(
                sa.select(placeholders.c.id, placeholders.c.seq).where(placeholders.c.id.in_(calls))
            ).all()
        )
        started = [row for row in repeated if row.state == "launched" or seq.get(row.call_id, 0) > 0]
        waiting = [row for row in repeated if row.state in ("not_launched", "pending") and row not in started]
        chosen = [row for row in waiting if row.state == "pending"]  # the user launched it
        kept = (started or chosen or waiting or repeated)[0]  # called, else launched, else the first
        for row in waiting:  # a cancelled row stays as it is
            if row is kept:
                continue
            connection.execute(
                rows.update()
                .where(rows.c.id == row.id)
                .values(
                    state="skipped",
                    skip_reason="duplicate_phone_number",
                    skip_message=f"the same number as row {kept.row_index}",
                    call_id=None,
                )
            )
            if row.call_id:  # its placeholder call: never started
                connection.execute(
                    placeholders.delete().where(placeholders.c.id == row.call_id, placeholders.c.seq == 0)
                )
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

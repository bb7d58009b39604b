"""Numbers stored as E.164 writes them: `check_e164` now answers `+330612345678` (a French number with
its trunk's 0, as contact lists have it) as `+33612345678`, and every lookup uses that form. A
do-not-contact entry or a caller id stored before in the other form would no longer match: they are
rewritten, the entry already in the canonical form kept where both exist (the first entry wins).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.common import canonical_number

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = {
    "do_not_contact": ("organization_id", "phone_number"),
    "phone_numbers": ("id", "organization_id", "phone_number"),
}


def upgrade() -> None:
    connection = op.get_bind()
    for name, columns in TABLES.items():
        table = sa.table(name, *(sa.column(column, sa.String) for column in columns))
        rows = connection.execute(sa.select(*table.c)).all()
        taken = {(row.organization_id, row.phone_number) for row in rows}
        for row in rows:
            canonical = canonical_number(row.phone_number)
            if canonical == row.phone_number:
                continue
            same = (table.c.organization_id == row.organization_id) & (
                table.c.phone_number == row.phone_number
            )
            if (row.organization_id, canonical) in taken:  # the canonical one is there already: it stays
                connection.execute(table.delete().where(same))
            else:
                connection.execute(table.update().where(same).values(phone_number=canonical))
                taken.add((row.organization_id, canonical))


def downgrade() -> None:
    pass  # the canonical form is what the earlier versions accepted too

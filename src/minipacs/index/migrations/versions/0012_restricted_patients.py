"""Restricted (VIP, staff, sensitive) patients: reading them needs a break-the-glass reason.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restricted_patients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("restricted_by", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("patient_id", "issuer"),
    )


def downgrade() -> None:
    op.drop_table("restricted_patients")

"""The outbox of signed reports to send as HL7 v2 ORU^R01 over MLLP (issue #14,
hl7/oru_sender.py).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_report_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("control_id", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hl7_report_outbox_report_id", "hl7_report_outbox", ["report_id"])
    op.create_index("ix_hl7_report_outbox_status", "hl7_report_outbox", ["status"])


def downgrade() -> None:
    op.drop_index("ix_hl7_report_outbox_status", table_name="hl7_report_outbox")
    op.drop_index("ix_hl7_report_outbox_report_id", table_name="hl7_report_outbox")
    op.drop_table("hl7_report_outbox")

"""Issue 11: the re-identification mapping of de-identified exports, kept in the index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deidentification_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("export_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("date_shift_days", sa.Integer(), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("deidentified_study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("export_id", "study_instance_uid"),
    )
    op.create_index("ix_deidentification_exports_export_id", "deidentification_exports",
                    ["export_id"])
    op.create_index("ix_deidentification_exports_study", "deidentification_exports",
                    ["study_instance_uid"])
    op.create_index("ix_deidentification_exports_patient", "deidentification_exports",
                    ["patient_id"])


def downgrade() -> None:
    op.drop_table("deidentification_exports")

"""Reports: one row per report version (reports/models.py).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("conclusion", sa.Text(), nullable=False),
        sa.Column("based_on", sa.String(64), nullable=False),
        sa.Column("key_images", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("signer", sa.String(128), nullable=False),
        sa.Column("signer_certificate", sa.String(64), nullable=False),
        sa.Column("amends", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=True),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.Column("pdf_sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(64), nullable=False),
    )
    op.create_index("ix_reports_study_instance_uid", "reports", ["study_instance_uid"])
    op.create_index("ix_reports_patient_id", "reports", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_reports_patient_id", "reports")
    op.drop_index("ix_reports_study_instance_uid", "reports")
    op.drop_table("reports")

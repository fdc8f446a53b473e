"""Patient reconciliation: corrections history, merge aliases, served-corrected instances.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch operation would rebuild `patients`,
    # which SQLite refuses while studies refer to it with foreign keys on.
    op.add_column("patients", sa.Column("reconciled", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("instances", sa.Column("stored_patient", sa.Text(), nullable=True))
    op.create_table(
        "patient_corrections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("source_patient_id", sa.String(64), nullable=False),
        sa.Column("source_issuer", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("before_json", sa.Text(), nullable=False),
        sa.Column("after_json", sa.Text(), nullable=False),
        sa.Column("study_uids", sa.Text(), nullable=False),
    )
    op.create_index("ix_patient_corrections_patient_id", "patient_corrections",
                    ["patient_id"])
    op.create_index("ix_patient_corrections_source_patient_id", "patient_corrections",
                    ["source_patient_id"])
    op.create_table(
        "patient_aliases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patients.id"), nullable=False),
        sa.UniqueConstraint("patient_id", "issuer"),
    )
    op.create_index("ix_patient_aliases_patient_pk", "patient_aliases", ["patient_pk"])


def downgrade() -> None:
    op.drop_index("ix_patient_aliases_patient_pk", "patient_aliases")
    op.drop_table("patient_aliases")
    op.drop_index("ix_patient_corrections_source_patient_id", "patient_corrections")
    op.drop_index("ix_patient_corrections_patient_id", "patient_corrections")
    op.drop_table("patient_corrections")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("stored_patient")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("reconciled")

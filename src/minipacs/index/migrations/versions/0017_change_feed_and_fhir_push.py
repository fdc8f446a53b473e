"""Change feed (changes, change_head) and the FHIR push's state.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(64), nullable=False),
    )
    head = op.create_table(
        "change_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    # The one head row exists from the start: writers only ever update it.
    op.bulk_insert(head, [{"id": 1, "seq": 0}])
    op.create_table(
        "fhir_push_studies",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("changed_seq", sa.BigInteger(), nullable=False),
        sa.Column("pushed_seq", sa.BigInteger(), nullable=False),
        sa.Column("stable_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("pushed_at", sa.DateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("remote_patient", sa.String(128), nullable=False),
        sa.Column("remote_imaging_study", sa.String(128), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_fhir_push_studies_stable_at", "fhir_push_studies", ["stable_at"])
    op.create_table(
        "fhir_push_cursor",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fhir_push_cursor")
    op.drop_index("ix_fhir_push_studies_stable_at", table_name="fhir_push_studies")
    op.drop_table("fhir_push_studies")
    op.drop_table("change_head")
    op.drop_table("changes")

"""Orders (issue 12): a worklist item is an order, with a version, the placer's order
number, the study its images arrived as, its MPPS instance and a reconciliation flag.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_procedure_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("placer_order_number", sa.String(length=64),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("performed_study_uid", sa.String(length=64),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("performed_procedure_step_uid", sa.String(length=64),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("reconciliation", sa.Text(), nullable=False,
                                      server_default=""))
        batch_op.create_index(
            batch_op.f("ix_scheduled_procedure_steps_performed_procedure_step_uid"),
            ["performed_procedure_step_uid"], unique=False)
        # Arriving images find their order by accession number (indexed since 0002) or
        # by Study Instance UID (archive ingest: one indexed lookup).
        batch_op.create_index(
            batch_op.f("ix_scheduled_procedure_steps_study_instance_uid"),
            ["study_instance_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scheduled_procedure_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_procedure_steps_study_instance_uid"))
        batch_op.drop_index(
            batch_op.f("ix_scheduled_procedure_steps_performed_procedure_step_uid"))
        batch_op.drop_column("reconciliation")
        batch_op.drop_column("performed_procedure_step_uid")
        batch_op.drop_column("performed_study_uid")
        batch_op.drop_column("placer_order_number")
        batch_op.drop_column("version")

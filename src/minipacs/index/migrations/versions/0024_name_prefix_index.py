"""Name-prefix search at scale: a pattern-operator index on patients.patient_name_lower,
PostgreSQL only (issue #13, scale; see index/models.py Patient).

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's case-sensitive LIKE already uses ix_patients_patient_name_lower
    op.create_index("ix_patients_patient_name_lower_pattern", "patients",
                    ["patient_name_lower"],
                    postgresql_ops={"patient_name_lower": "varchar_pattern_ops"})


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_patients_patient_name_lower_pattern", table_name="patients")

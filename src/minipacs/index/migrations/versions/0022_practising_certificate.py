"""Accounts: the practising-certificate code (mã chứng chỉ hành nghề) of a person, which
insurance claims name as the reading doctor (QĐ 130/QĐ-BYT XML4 MA_BS_DOC_KQ).

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("practising_certificate", sa.String(64),
                                      nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.drop_column("practising_certificate")

"""Accounts: the practising-certificate code (mã chứng chỉ hành nghề) of a person, which
insurance claims name as the reading doctor (QĐ 130/QĐ-BYT XML4 MA_BS_DOC_KQ).

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("practising_certificate", sa.String(64),
                                      nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.drop_column("practising_certificate")

"""Accounts signed in by an OpenID Provider: its issuer and the subject it names.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity_provider", sa.String(length=255),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("external_subject", sa.String(length=255),
                                      nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("user_accounts", schema=None) as batch_op:
        batch_op.drop_column("external_subject")
        batch_op.drop_column("identity_provider")

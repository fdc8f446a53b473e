"""Registered AEs say whether we reach them over TLS (C-MOVE destinations, Storage
Commitment reports; PS3.15 B.1).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("remote_aes") as batch:
        batch.add_column(sa.Column("tls", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("remote_aes") as batch:
        batch.drop_column("tls")

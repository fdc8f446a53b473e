"""Access tags: the tags a study carries, and those of users, tokens, share links and AEs.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TAGGED = (("user_accounts", ("access_tags",)), ("api_tokens", ("access_tags",)),
           ("share_links", ("access_tags",)), ("remote_aes", ("store_tags", "access_tags")))


def upgrade() -> None:
    op.create_table(
        "study_access_tags",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_study_access_tags_tag", "study_access_tags",
                    ["tag", "study_instance_uid"])
    for table, columns in _TAGGED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.add_column(sa.Column(column, sa.Text(), nullable=False,
                                              server_default=""))


def downgrade() -> None:
    for table, columns in _TAGGED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.drop_column(column)
    op.drop_index("ix_study_access_tags_tag", table_name="study_access_tags")
    op.drop_table("study_access_tags")

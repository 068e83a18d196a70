"""Uploaded datasets (issue 19): one record per API key and content, ``app/datasets/store.py``.

Revision ID: 0004
Revises: 0002 (to become 0003 once the job-store migration 0003 lands beside it)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("resize", sa.JSON),
        sa.Column("description", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("datasets_id", "datasets", ["id"])
    op.create_index("datasets_owner_created", "datasets", ["owner", "created_at"])

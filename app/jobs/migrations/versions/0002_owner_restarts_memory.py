"""Jobs get an owner (sha256 of the creating API key), a restart count and measured memory;
indexes for listing one owner's jobs and for pruning by finish time.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.Text))
    op.add_column("jobs", sa.Column("restarts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("memory", sa.JSON))
    op.create_index("jobs_owner_created", "jobs", ["owner", "created_at"])
    op.create_index("jobs_finished", "jobs", ["finished_at"])

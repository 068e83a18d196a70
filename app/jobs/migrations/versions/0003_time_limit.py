"""Jobs get their time limit as a column, so the reaper reads it without loading each request;
existing jobs take it from their stored request (NULL when they asked for none: the server's).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The request's own ``time_limit_s`` (a JSON number or null), as each database reads JSON.
FROM_REQUEST = {
    "sqlite": "json_extract(request, '$.time_limit_s')",
    "postgresql": "CAST(request ->> 'time_limit_s' AS DOUBLE PRECISION)",
}


def upgrade() -> None:
    op.add_column("jobs", sa.Column("time_limit_s", sa.Double))
    op.execute(f"UPDATE jobs SET time_limit_s = {FROM_REQUEST[op.get_bind().dialect.name]}")

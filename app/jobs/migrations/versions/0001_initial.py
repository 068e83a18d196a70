"""The schema of the first release (one SQLite file, no migrations): created when missing.

A data directory from that release already has these tables (and no ``alembic_version``):
``CREATE ... IF NOT EXISTS`` leaves them, and its jobs, as they are.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The first release's SCHEMA, verbatim.
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    request TEXT NOT NULL,
    memory_estimate_bytes INTEGER NOT NULL,
    device TEXT,
    node TEXT,
    history TEXT NOT NULL DEFAULT '[]',
    metrics TEXT,
    progress TEXT,
    duration_s REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_SCHEMA.split(";"):
            if statement.strip():
                op.execute(statement)
        return
    # Other databases: the same tables, with their own types for times (double precision) and JSON.
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("memory_estimate_bytes", sa.BigInteger, nullable=False),
        sa.Column("device", sa.Text),
        sa.Column("node", sa.JSON),
        sa.Column("history", sa.JSON, nullable=False, server_default=sa.text("'[]'::json")),
        sa.Column("metrics", sa.JSON),
        sa.Column("progress", sa.JSON),
        sa.Column("duration_s", sa.Double),
        sa.Column("error", sa.Text),
    )
    op.create_index("jobs_created", "jobs", ["created_at"])
    op.create_index("jobs_status", "jobs", ["status"])
    op.create_table(
        "events",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )

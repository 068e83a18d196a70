"""Dataset records, in the job store's database through the job store's engine (its retries,
its 503 when the database is down, its Alembic migrations: table ``datasets``, revision 0004).

A record is one key's dataset: the same bytes uploaded under two keys are two records of one
id, over one file (app/datasets/files.py). Without keys every record has the owner ``""``."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from app.datasets.description import Description
from app.jobs.store import JobStore

Json = sa.JSON(none_as_null=True)
datasets = sa.Table(
    "datasets",
    sa.MetaData(),
    sa.Column("owner", sa.Text, primary_key=True),  # sha256 hex of the uploading API key, or ""
    sa.Column("id", sa.Text, primary_key=True),  # sha256 hex of the file
    sa.Column("name", sa.Text, nullable=False),  # the client's file name, for display
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("resize", Json),  # [width, height] of an image dataset's images, when asked
    sa.Column("description", Json, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)


class Dataset(BaseModel):
    """One key's dataset, as stored."""

    id: str
    owner: str = Field(exclude=True)
    name: str
    size_bytes: int
    resize: list[int] | None
    description: Description
    created_at: float


class DatasetStore:
    """The ``datasets`` table. ``owner`` is a key's sha256 (``""`` without keys); ``admin``
    callers reach every owner's records."""

    def __init__(self, jobs: JobStore) -> None:
        # The job store's own transaction helpers: one engine, one retry policy, one schema.
        self._write, self._query = jobs._write, jobs._query

    def add(self, dataset: Dataset, quota: int, over_quota: Exception) -> bool:
        """Store ``dataset``; False when its owner already has it; ``over_quota`` raised when the
        owner's datasets would pass ``quota`` bytes."""
        row = {**dataset.model_dump(mode="json"), "owner": dataset.owner}

        def work(conn: Connection) -> bool:
            if conn.execute(_one(dataset.id, dataset.owner)).first() is not None:
                return False
            if _bytes_of(conn, dataset.owner) + dataset.size_bytes > quota:
                raise over_quota
            conn.execute(datasets.insert().values(**row))
            return True

        try:
            return self._write(work)
        except exc.IntegrityError:  # the same upload, committed meanwhile by another process
            return False

    def get(self, dataset_id: str, owner: str, admin: bool = False) -> Dataset | None:
        """The owner's record of ``dataset_id`` (an admin's: any owner's, its own first)."""
        statement = (
            sa.select(datasets)
            .where(datasets.c.id == dataset_id, sa.true() if admin else datasets.c.owner == owner)
            .order_by((datasets.c.owner == owner).desc())
            .limit(1)
        )
        row = self._query(lambda conn: conn.execute(statement).first())
        return None if row is None else Dataset.model_validate(dict(row._mapping))

    def list(self, offset: int, limit: int, owner: str | None) -> tuple[list[Dataset], int]:
        """The newest first, and how many there are (of ``owner``; None: of everyone)."""
        where = [] if owner is None else [datasets.c.owner == owner]
        page = sa.select(datasets).where(*where).order_by(datasets.c.created_at.desc(), datasets.c.id)
        count = sa.select(sa.func.count()).select_from(datasets).where(*where)

        def work(conn: Connection) -> tuple[list[Dataset], int]:
            rows = conn.execute(page.limit(limit).offset(offset))
            found = [Dataset.model_validate(dict(row._mapping)) for row in rows]
            return found, conn.execute(count).scalar_one()

        return self._query(work)

    def bytes_of(self, owner: str) -> int:
        return self._query(lambda conn: _bytes_of(conn, owner))

    def described(self, dataset_id: str, resize: list[int] | None) -> Description | None:
        """The description any owner's record of these bytes (and ``resize``) already has."""
        statement = sa.select(datasets.c.description, datasets.c.resize).where(datasets.c.id == dataset_id)
        rows = self._query(lambda conn: conn.execute(statement).all())
        return next((Description.model_validate(d) for d, r in rows if r == resize), None)

    def delete(self, dataset_id: str, owner: str, admin: bool = False) -> int:
        """Remove the owner's record of ``dataset_id`` (an admin's: every owner's); how many."""
        statement = datasets.delete().where(
            datasets.c.id == dataset_id, sa.true() if admin else datasets.c.owner == owner
        )
        return self._write(lambda conn: conn.execute(statement).rowcount)

    def referenced(self, dataset_id: str) -> bool:
        """Whether any record still refers to the file of ``dataset_id``."""
        statement = sa.select(datasets.c.id).where(datasets.c.id == dataset_id).limit(1)
        return self._query(lambda conn: conn.execute(statement).first() is not None)


def _one(dataset_id: str, owner: str) -> sa.Select:
    return sa.select(datasets.c.id).where(datasets.c.id == dataset_id, datasets.c.owner == owner)


def _bytes_of(conn: Connection, owner: str) -> int:
    total = sa.select(sa.func.coalesce(sa.func.sum(datasets.c.size_bytes), 0)).where(
        datasets.c.owner == owner
    )
    return int(conn.execute(total).scalar_one())

"""Jobs persisted through SQLAlchemy Core: spec, status, history, metrics, events.

SQLite under the data directory by default (WAL, a busy timeout: several processes on one machine
share it), or PostgreSQL named by ``MB_DATABASE_URL`` (any number of API replicas and training
actors share it). Each process, each store, opens its own connection pool; no Python lock is held
while the database waits. The schema is migrated with Alembic (``app/jobs/migrations``) when a
store first connects, so a data directory from an earlier release is upgraded in place. Reads
return the job domain's ``Job`` (``app.jobs.domain``); writes take its models.

Every call retries a busy or lost database with backoff for ``retry_seconds`` (a write whose
commit landed though its answer was lost is not made twice, nor refused), then raises
``StoreUnavailable`` naming the database (a 503 on a route); a write the database refuses (a full
disk, a read-only file or server) raises its subclass ``StoreNotWritable``, which readiness reports
(``check_writable`` makes one real write to find out). Status changes out of ``queued`` /
``running`` are conditional updates, so a cancel and a finishing worker (or two replicas
cancelling) cannot both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url

from app.core.config import settings
from app.jobs.domain import (
    ACTIVE,
    TERMINAL,
    EpochResult,
    Job,
    JobMemory,
    JobStatus,
    Metrics,
    NodeInfo,
    Progress,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE_BUSY_S = 1.0  # one attempt's wait on a SQLite write lock; retries add up to retry_seconds
CONNECT_TIMEOUT_S = 5
MIGRATIONS = Path(__file__).with_name("migrations")
PG_MIGRATION_LOCK = 0x4D42_0001  # pg_advisory_xact_lock key: one replica migrates at a time
PROBE_EVERY_S = 1.0  # readiness writes to the database at most this often; in between, the last answer
PROBE_BUSY_S = 0.05  # a probe does not wait on another writer's lock: a busy database takes writes
# Errors of a database that refuses writes: SQLite's result codes (extended ones start with these)
# and PostgreSQL's SQLSTATEs (disk_full, read_only_sql_transaction).
SQLITE_REFUSALS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
POSTGRES_REFUSALS = ("53100", "25006")

Json = sa.JSON(none_as_null=True)  # json on PostgreSQL (keeps key order), text on SQLite
# Text in the database (the enum's values); a ``JobStatus`` in Python.
Status = sa.Enum(JobStatus, native_enum=False, values_callable=lambda kind: [s.value for s in kind])
metadata = sa.MetaData()
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("status", Status, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("request", Json, nullable=False),
    sa.Column("memory_estimate_bytes", sa.BigInteger, nullable=False),
    sa.Column("device", sa.Text),
    sa.Column("node", Json),
    sa.Column("history", Json, nullable=False),
    sa.Column("metrics", Json),
    sa.Column("progress", Json),
    sa.Column("duration_s", sa.Double),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.Text),  # sha256 hex of the creating API key, never the key
    sa.Column("restarts", sa.Integer, nullable=False),
    sa.Column("memory", Json),  # {estimated_bytes, measured_peak_bytes, how}
    sa.Column("time_limit_s", sa.Double),  # the job's own; NULL: the server's MB_MAX_JOB_SECONDS
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("data", Json, nullable=False),
)
_TRANSIENT = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, sqlite3.OperationalError)
_WITHOUT_REQUEST = [c for c in jobs.c if c.name != "request"]


class StoreUnavailable(Exception):
    """The database does not answer (down, locked past the retries, unreadable): retry later."""

    state = "is unavailable"

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(f"the job store ({database}) {self.state}: {reason}")
        self.database = database
        self.reason = reason


class StoreNotWritable(StoreUnavailable):
    """The database refuses writes (its disk is full, its file or server is read-only): reads go on."""

    state = "takes no writes"


def describe(url: sa.URL) -> str:
    """The database in words, without its password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    return f"PostgreSQL {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


class JobStore:
    """The job table and each job's progress events.

    ``migrate=False`` is a worker's store: it neither checks a SQLite file for corruption nor
    migrates the schema (the API processes do both, before any job can start)."""

    def __init__(
        self,
        data_dir: Path,
        url: str | None = None,
        *,
        retry_seconds: float | None = None,
        migrate: bool = True,
    ) -> None:
        self.url = (
            make_url(url) if url else make_url(f"sqlite:///{Path(data_dir).resolve() / 'jobs.sqlite3'}")
        )
        self.database = describe(self.url)
        self.retry_seconds = settings.db_retry_seconds if retry_seconds is None else retry_seconds
        self._sqlite = self.url.get_backend_name() == "sqlite"
        self.path = Path(self.url.database) if self._sqlite and self.url.database else None
        self._migrate = migrate
        self._opened = False
        self._open_lock = threading.Lock()  # only for the first connection's migration
        self._probe_id = f"probe-{uuid.uuid4().hex}"  # never a job's id (those are bare hex)
        self._probed: tuple[float, str | None] = (-PROBE_EVERY_S, None)  # (when, why writes failed)
        self._engine = _sqlite_engine(self.url) if self._sqlite else _server_engine(self.url)

    @classmethod
    def from_settings(cls, **options: Any) -> JobStore:
        """The store the settings name: ``MB_DATABASE_URL``, else SQLite in ``MB_DATA_DIR``."""
        url = settings.database_url.get_secret_value() if settings.database_url else None
        return cls(settings.data_dir, url, **options)

    def close(self) -> None:
        self._engine.dispose()

    # Connecting, migrating, retrying.

    def open(self) -> None:
        """Connect and migrate the schema to the newest revision (once; later calls return at once)."""
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            if self._migrate and self.path is not None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with _file_lock(self.path.with_name(self.path.name + ".lock")):
                        _move_aside_if_corrupt(self.path)
                        self._upgrade()
                except OSError as e:  # a read-only data directory, say: a 503, not a 500
                    raise StoreUnavailable(self.database, f"{type(e).__name__}: {e}") from e
            elif self._migrate:
                self._upgrade()
            self._opened = True

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._engine.begin() as conn:
            if not self._sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def _retry(
        self, operation: Callable[[], T], retry_seconds: float | None = None, *, writing: bool = False
    ) -> T:
        """``operation()``, retried with backoff while the database is busy or unreachable."""
        deadline = time.monotonic() + (self.retry_seconds if retry_seconds is None else retry_seconds)
        delay = 0.05
        while True:
            try:
                self.open()
                return operation()
            except _TRANSIENT as e:
                if time.monotonic() + delay > deadline:
                    raise self._unavailable(e, writing) from e
                log.info("job store %s: %s; retrying in %.2f s", self.database, _reason(e), delay)
            except (exc.DatabaseError, sqlite3.DatabaseError) as e:  # unreadable: retrying will not help
                if isinstance(e, exc.IntegrityError | exc.ProgrammingError | exc.DataError):
                    raise
                raise self._unavailable(e, writing) from e
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unavailable(self, error: Exception, writing: bool) -> StoreUnavailable:
        """The exception for ``error``: ``StoreNotWritable`` when a write was refused."""
        kind = StoreNotWritable if writing and _refuses_writes(error) else StoreUnavailable
        return kind(self.database, _reason(error))

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reads: on SQLite no BEGIN, so nothing waits on a writer's lock."""
        with self._engine.connect().execution_options(mb_read=True) as conn:
            yield conn

    def _write(self, work: Callable[[Connection], T], busy_s: float | None = None) -> T:
        """``work`` in one transaction (SQLite: BEGIN IMMEDIATE), retried as a whole. With
        ``busy_s``: tried once, waiting at most that long for another writer's lock."""

        def attempt() -> T:
            with self._engine.connect() as conn:
                if busy_s is not None and self._sqlite:
                    _busy_timeout(conn, busy_s)
                try:
                    with conn.begin():
                        return work(conn)
                finally:
                    if busy_s is not None and self._sqlite:
                        _busy_timeout(conn, SQLITE_BUSY_S)

        return self._retry(attempt, None if busy_s is None else 0, writing=True)

    def _query(self, work: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            with self._read() as conn:
                return work(conn)

        return self._retry(attempt)

    def ping(self) -> None:
        """One quick round trip (readiness); ``StoreUnavailable`` when it fails."""
        self._retry(lambda: self._query_once(sa.select(1)), retry_seconds=0)

    def check_writable(self) -> None:
        """``StoreNotWritable`` when the database refuses a write (its disk is full, its file or
        server read-only); one busy with another writer is not refused. It is asked with a real,
        committed write (a row of ``events`` for no job, added and removed in one transaction), at
        most every ``PROBE_EVERY_S``; in between, the last answer is given again."""
        at, refused = self._probed
        if time.monotonic() - at >= PROBE_EVERY_S:
            refused = self._probe()
            self._probed = (time.monotonic(), refused)
        if refused is not None:
            raise StoreNotWritable(self.database, refused)

    def _probe(self) -> str | None:
        """Why the database refuses a write now; None when it takes one (or is busy, or down)."""
        row = {"job_id": self._probe_id, "seq": 0, "kind": "probe", "data": {}}

        def work(conn: Connection) -> None:
            conn.execute(events.insert().values(**row))
            conn.execute(events.delete().where(events.c.job_id == self._probe_id))

        try:
            self._write(work, busy_s=PROBE_BUSY_S)
        except StoreNotWritable as e:
            return e.reason
        except StoreUnavailable:  # locked by another writer, or down (``ping`` says so)
            return None
        return None

    def _query_once(self, statement: sa.Executable) -> Any:
        with self._read() as conn:
            return conn.execute(statement).scalar()

    # Jobs.

    def create(
        self,
        job_id: str,
        request: dict,
        memory_estimate_bytes: int,
        owner: str | None = None,
        time_limit_s: float | None = None,
    ) -> None:
        values = {
            "id": job_id,
            "status": JobStatus.QUEUED,
            "created_at": time.time(),
            "request": request,
            "memory_estimate_bytes": memory_estimate_bytes,
            "history": [],
            "owner": owner,
            "restarts": 0,
            "time_limit_s": time_limit_s,
        }

        def work(conn: Connection) -> None:
            if not _landed(conn, job_id, jobs.c.created_at, values["created_at"]):
                conn.execute(jobs.insert().values(**values))

        self._write(work)

    def get(self, job_id: str, *, with_request: bool = True, owner: str | None = None) -> Job | None:
        """The job, or None when there is none. With ``owner``, only that owner's job: another
        owner's is not read at all (the database filters it out, so its request is never loaded)."""
        columns = list(jobs.c) if with_request else _WITHOUT_REQUEST
        where = [jobs.c.id == job_id] if owner is None else [jobs.c.id == job_id, jobs.c.owner == owner]
        row = self._query(lambda conn: conn.execute(sa.select(*columns).where(*where)).first())
        return None if row is None else _decode(row)

    def list(self, offset: int, limit: int, owner: str | None = None) -> tuple[list[Job], int]:
        """The most recent jobs first, without their requests, and the number of stored jobs
        (of ``owner`` when given)."""
        where = [] if owner is None else [jobs.c.owner == owner]
        page = (
            sa.select(*_WITHOUT_REQUEST)
            .where(*where)
            .order_by(jobs.c.created_at.desc(), jobs.c.id)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(jobs).where(*where)

        def work(conn: Connection) -> tuple[list[Job], int]:
            return [_decode(row) for row in conn.execute(page)], conn.execute(count).scalar_one()

        return self._query(work)

    def count_active(self) -> int:
        statement = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.in_(ACTIVE))
        return self._query(lambda conn: conn.execute(statement).scalar_one())

    def active(self) -> list[Job]:
        """Every queued or running job, oldest first, without its request (for a reaper)."""
        statement = sa.select(*_WITHOUT_REQUEST).where(jobs.c.status.in_(ACTIVE)).order_by(jobs.c.created_at)
        return self._query(lambda conn: [_decode(row) for row in conn.execute(statement)])

    def active_using_dataset(self, dataset_id: str, owner: str | None) -> list[str]:
        """Ids of the queued or running jobs that train on the uploaded dataset ``dataset_id``
        (of ``owner``, ``""`` for none; None: of anyone)."""
        statement = sa.select(jobs.c.id, jobs.c.owner, jobs.c.request).where(jobs.c.status.in_(ACTIVE))
        rows = self._query(lambda conn: conn.execute(statement).all())
        return [
            job_id
            for job_id, job_owner, request in rows
            if (request.get("dataset") or {}).get("id") == dataset_id
            and (owner is None or (job_owner or "") == owner)
        ]

    def finished_before(self, before: float, limit: int = 500) -> list[str]:
        """Ids of finished jobs that finished before ``before`` (a Unix time), oldest first."""
        statement = (
            sa.select(jobs.c.id)
            .where(jobs.c.status.in_(TERMINAL), jobs.c.finished_at < before)
            .order_by(jobs.c.finished_at)
            .limit(limit)
        )
        return self._query(lambda conn: list(conn.execute(statement).scalars()))

    def mark_running(self, job_id: str, device: str, node: NodeInfo) -> bool:
        """Move a queued job to ``running`` on ``node``; False (and no change) when it was not queued."""
        now = time.time()
        statement = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=now, device=device, node=node.model_dump())
        )
        return self._write(
            lambda conn: (
                conn.execute(statement).rowcount == 1 or _landed(conn, job_id, jobs.c.started_at, now)
            )
        )

    def add_restart(self, job_id: str, node: NodeInfo | None = None) -> int:
        """Count one more restart of the job's worker (now on ``node``, when given); the new count.
        Counted once: the increment is conditional on the count read first, so a retry whose
        first commit landed though its answer was lost changes nothing."""
        where = jobs.c.id == job_id
        before = self._query(lambda conn: conn.execute(sa.select(jobs.c.restarts).where(where)).scalar())
        if before is None:
            return 0
        values: dict[str, Any] = {"restarts": before + 1}
        if node is not None:
            values["node"] = node.model_dump()

        def work(conn: Connection) -> int:
            conn.execute(jobs.update().where(where, jobs.c.restarts == before).values(**values))
            return conn.execute(sa.select(jobs.c.restarts).where(where)).scalar() or 0

        return self._write(work)

    def record_progress(self, job_id: str, progress: Progress) -> bool:
        """Store the latest progress (and its event); False, and no change, when a report of the
        same or a later ``step`` is already there (a write retried after its commit, or a
        restarted worker replaying steps since its checkpoint): followers see each step once."""
        data = progress.model_dump()

        def work(conn: Connection) -> bool:
            row = _lock_job(conn, job_id)
            if row is None or _repeats(progress, row.progress):
                return False
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(progress=data))
            _add_event(conn, job_id, "progress", data)
            return True

        return self._write(work)

    def record_epoch(self, job_id: str, entry: EpochResult, progress: Progress) -> bool:
        """Append an epoch to the history (and its event); False, and no change, when that epoch
        is already there (a restarted worker reporting it again)."""
        data = entry.model_dump()

        def work(conn: Connection) -> bool:
            row = _lock_job(conn, job_id)
            history = None if row is None else row.history
            if history is None or any(h.get("epoch") == entry.epoch for h in history):
                return False
            statement = jobs.update().where(jobs.c.id == job_id)
            conn.execute(statement.values(history=[*history, data], progress=progress.model_dump()))
            _add_event(conn, job_id, "epoch", data)
            return True

        return self._write(work)

    def events_after(self, job_id: str, seq: int) -> list[tuple[int, str, dict]]:
        statement = (
            sa.select(events.c.seq, events.c.kind, events.c.data)
            .where(events.c.job_id == job_id, events.c.seq > seq)
            .order_by(events.c.seq)
        )
        return self._query(lambda conn: [tuple(row) for row in conn.execute(statement)])

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None = None,
        metrics: Metrics | None = None,
        duration_s: float | None = None,
        memory: JobMemory | None = None,
    ) -> bool:
        """Move an active job to ``status``; False (and no change) when it had already finished."""
        assert status in TERMINAL
        now = time.time()
        values: dict[str, Any] = {"status": status, "error": error, "finished_at": now}
        if metrics is not None:
            values["metrics"] = metrics.model_dump()
        if memory is not None:
            values["memory"] = memory.model_dump()
        values["duration_s"] = (
            duration_s
            if duration_s is not None
            else sa.case((jobs.c.started_at.is_(None), sa.null()), else_=now - jobs.c.started_at)
        )
        statement = jobs.update().where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE)).values(**values)
        return self._write(
            lambda conn: (
                conn.execute(statement).rowcount == 1 or _landed(conn, job_id, jobs.c.finished_at, now)
            )
        )

    def delete(self, job_id: str) -> bool:
        """Remove a finished job and its events; False (and no change) when it is missing or active."""

        def work(conn: Connection) -> bool:
            gone = conn.execute(jobs.delete().where(jobs.c.id == job_id, jobs.c.status.in_(TERMINAL)))
            if gone.rowcount != 1:
                return False
            conn.execute(events.delete().where(events.c.job_id == job_id))
            return True

        return self._write(work)


def _lock_job(conn: Connection, job_id: str) -> sa.Row | None:
    """The job's history and progress, its row locked until the transaction ends (PostgreSQL;
    SQLite's BEGIN IMMEDIATE already holds the database); None when there is no such job."""
    statement = sa.select(jobs.c.history, jobs.c.progress).where(jobs.c.id == job_id).with_for_update()
    return conn.execute(statement).first()


def _landed(conn: Connection, job_id: str, column: sa.Column, value: float) -> bool:
    """Whether the job's ``column`` holds ``value``, the time this very call wrote: it is retrying
    a write whose commit reached the database though the answer was lost (a connection cut at
    that moment), so the write is done, and must not be refused or made twice."""
    return conn.execute(sa.select(column).where(jobs.c.id == job_id)).scalar() == value


def _repeats(new: Progress, last: dict | None) -> bool:
    """Whether progress ``new`` is at or before the ``last`` stored one."""
    last_step = (last or {}).get("step")
    return isinstance(last_step, int) and new.step <= last_step


def _add_event(conn: Connection, job_id: str, kind: str, data: dict) -> None:
    last = conn.execute(sa.select(sa.func.max(events.c.seq)).where(events.c.job_id == job_id)).scalar()
    conn.execute(events.insert().values(job_id=job_id, seq=(last or 0) + 1, kind=kind, data=data))


def _decode(row: sa.Row) -> Job:
    return Job.model_validate(dict(row._mapping))


def _refuses_writes(error: Exception) -> bool:
    """Whether ``error`` is a database refusing a write (full, read-only), not a busy or lost one."""
    original = getattr(error, "orig", None) or error
    code = getattr(original, "sqlite_errorname", None)
    if code is not None:
        return code.startswith(SQLITE_REFUSALS)
    return getattr(original, "sqlstate", None) in POSTGRES_REFUSALS


def _busy_timeout(conn: Connection, seconds: float) -> None:
    """How long SQLite waits on another writer's lock on this connection."""
    conn.connection.driver_connection.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")


def _reason(error: Exception) -> str:
    """The database's own first line about ``error``."""
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def _sqlite_engine(url: sa.URL) -> Engine:
    # The driver in autocommit mode; writes BEGIN IMMEDIATE themselves (SQLAlchemy's documented
    # recipe), so a writer takes the lock up front and a read never waits on one.
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_S, "isolation_level": None, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if not conn.get_execution_options().get("mb_read"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _server_engine(url: sa.URL) -> Engine:
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (the check and the migration run once at a time)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _move_aside_if_corrupt(path: Path) -> None:
    """A file that is not a readable SQLite database is renamed ``<name>.corrupt-<UTC time>``
    (with its WAL and shared-memory files), so the store starts empty and the old data is kept
    for inspection; one error line says so. A busy database is not corrupt: that error is raised."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_S)) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as e:
        result = str(e)
    if result == "ok":
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(moved)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(moved.with_name(moved.name + suffix))
    log.error(
        "job store %s is not a readable SQLite database (%s): moved it to %s; starting with no jobs",
        path,
        result,
        moved,
    )

"""Engine and sessions. One engine per database URL per process, made on first use.

Commits happen in one place per unit of work: `session_scope()` for tasks and the CLI, the
`SessionDep` dependency for web requests. Services only flush.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import BigInteger, ColumnElement, Engine, bindparam, create_engine, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import Settings, get_settings
from app.errors import Conflict


class Base(DeclarativeBase):
    pass


_lock = threading.Lock()
_engines: dict[str, tuple[Engine, sessionmaker[Session]]] = {}


def any_of(column, ids: Sequence[int]) -> ColumnElement[bool]:
    """`column = ANY(:ids)`: one array parameter instead of IN with one per id, which makes
    each list length a new statement to render and plan (1.3 ms of 4 for 100 ids on the
    search path)."""
    return column == func.any(bindparam(None, list(ids), type_=ARRAY(BigInteger)))


def add_named(session: Session, row: Base, column, taken: str) -> None:
    """Add a row whose `column` (a unique name) must be free: taken, before or by a
    concurrent request, is `Conflict(taken)` (409), never the row already there."""
    if session.scalar(select(column).where(column == getattr(row, column.key))) is not None:
        raise Conflict(taken)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # made by a concurrent request
        raise Conflict(taken) from None


def _get(settings: Settings | None) -> tuple[Engine, sessionmaker[Session]]:
    url = (settings or get_settings()).database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not resolved: start the embedded parts first")
    with _lock:
        if url not in _engines:
            engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=20,
                # Never server-side prepare: a generic plan cannot use the per-generation
                # partial HNSW indexes, a custom plan (with the value known) can.
                connect_args={"prepare_threshold": None, "connect_timeout": 5},
            )
            _engines[url] = (engine, sessionmaker(engine, expire_on_commit=False))
        return _engines[url]


def get_engine(settings: Settings | None = None) -> Engine:
    return _get(settings)[0]


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    return _get(settings)[1]


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop pooled connections (after fork, or when the database goes away in tests)."""
    with _lock:
        for engine, _ in _engines.values():
            engine.dispose()
        _engines.clear()


MIGRATION_LOCK = 7_340_001  # pg_advisory_xact_lock key: one migrator at a time


def migrate(settings: Settings | None = None, revision: str = "head", *, down: bool = False):
    """Run Alembic to `revision` (up, or down with `down=True`) under an advisory lock, so
    that a `serve` and a CLI starting together do not both migrate."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import func, pool, select

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["configure_logger"] = False
    engine = create_engine((settings or get_settings()).database_url or "", poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            if down:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
    finally:
        engine.dispose()

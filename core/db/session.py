"""Engines and sessions, one engine per database URL per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

_ENGINES: dict[str, tuple[Engine, sessionmaker[Session]]] = {}
_LOCK = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL and a busy timeout let the embedded API and worker processes share one SQLite file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_parent(url: str) -> None:
    """SQLite creates the file, not its folder (the embedded state's ``.gisp`` may not exist yet)."""
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _create(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        _make_parent(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
        pool_timeout=10,  # a request waits this long for a pooled connection, then answers 503
        connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
    )


def _entry(settings: Settings | None) -> tuple[Engine, sessionmaker[Session]]:
    settings = settings or get_settings()
    with _LOCK:
        entry = _ENGINES.get(settings.database_url)
        if entry is None:
            engine = _create(settings)
            entry = (engine, sessionmaker(bind=engine, expire_on_commit=False))
            _ENGINES[settings.database_url] = entry
        return entry


def get_engine(settings: Settings | None = None) -> Engine:
    return _entry(settings)[0]


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    return _entry(settings)[1]


def dispose_engines() -> None:
    """Close pooled connections (after a fork, or before a test drops its database)."""
    with _LOCK:
        for engine, _ in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on error; for workers and commands."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

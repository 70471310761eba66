"""Alembic migrations go up and down on the real PostgreSQL (and SQLite, for the embedded mode)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from core.db.migrate import alembic_config, downgrade, upgrade
from core.db.models import Base

pytestmark = pytest.mark.services

TABLES = {
    "tenants",
    "api_keys",
    "calibration_sets",
    "jobs",
    "job_events",
    "checkpoints",
    "artifacts",
    "verifications",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _schema_drift(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_up_down_up_on_postgresql(fresh_database) -> None:
    url = fresh_database()
    upgrade(url)
    assert _tables(url) == TABLES
    assert _schema_drift(url) == []
    downgrade(url, "base")
    assert _tables(url) == set()
    upgrade(url)
    assert _tables(url) == TABLES


def test_up_down_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gisp.db'}"
    upgrade(url)
    assert _tables(url) == TABLES
    downgrade(url, "base")
    assert _tables(url) == set()


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1

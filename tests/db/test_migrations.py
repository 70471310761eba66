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


def test_0005_renames_the_methods_stored_jobs_ran(tmp_path: Path) -> None:
    """Jobs stored as flap / wanda-sp ran the engine's earlier readings, now named flap-headsum and
    wanda-sp-dense: the upgrade renames them (and only them), the downgrade names them back."""
    import json

    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'gisp.db'}"
    upgrade(url, "0004")
    engine = create_engine(url)
    now = "2026-01-01 00:00:00"
    specs = {"a": "flap", "b": "wanda-sp", "c": "gisp", "d": "magnitude"}
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :now)"), {"now": now}
            )
            for job, method in specs.items():
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, status, spec, request_hash, created_at, updated_at, attempt,"
                        " progress_step) VALUES (:id, 't', 'succeeded', :spec, 'h', :now, :now, 1, 0)"
                    ),
                    {"id": job, "spec": json.dumps({"method": method, "sparsities": [0.2]}), "now": now},
                )

        def methods() -> dict[str, str]:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT id, spec FROM jobs")).all()
            return {job: json.loads(spec)["method"] for job, spec in rows}

        upgrade(url, "0005")
        assert methods() == {"a": "flap-headsum", "b": "wanda-sp-dense", "c": "gisp", "d": "magnitude"}
        downgrade(url, "0004")
        assert methods() == specs
    finally:
        engine.dispose()

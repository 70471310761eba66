"""effective job specs and job phases

Jobs store the effective run (the engine's settings with every default resolved, experimental options
grouped) instead of the raw request; the calibration sizes leave the ``calibration`` object, and the micro-batch
size leaves the spec for the worker's settings. Jobs also report their phase and its progress.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CALIBRATION_SIZES = ("samples", "seq_len", "reconstruction_samples")
EXPERIMENTAL = ("normalization", "schedule")
ONE_SHOT = ("gisp-oneshot", "wanda-sp", "flap", "magnitude", "random")


def _upgrade_spec(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    calibration = dict(spec.get("calibration") or {})
    for name in CALIBRATION_SIZES:
        value = calibration.pop(name, None)
        if value is not None:
            spec[name] = value
    calibration.pop("batch_size", None)
    spec["calibration"] = {key: value for key, value in calibration.items() if value is not None}
    experimental = {name: spec.pop(name) for name in EXPERIMENTAL if spec.get(name) is not None}
    for name in EXPERIMENTAL:
        spec.pop(name, None)
    if experimental:
        spec["experimental"] = experimental
    method = spec.get("method", "gisp")
    if method in ONE_SHOT:
        spec.pop("steps", None)
    if method not in ("gisp", "gisp-oneshot"):
        spec.pop("score", None)
        spec.pop("bias_compensation", None)
    return {key: value for key, value in spec.items() if value is not None}


def _downgrade_spec(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    calibration = dict(spec.get("calibration") or {})
    for name in CALIBRATION_SIZES:
        if name in spec:
            calibration[name] = spec.pop(name)
    spec["calibration"] = calibration
    spec.update(spec.pop("experimental", None) or {})
    for name in ("protected_first_fraction", "protect_last_layer"):
        spec.pop(name, None)
    return spec


def _rewrite(convert: Any) -> None:
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON))
    connection = op.get_bind()
    for job_id, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(spec=convert(spec)))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("phase", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("phase_done", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("phase_total", sa.Integer(), nullable=True))
    _rewrite(_upgrade_spec)


def downgrade() -> None:
    _rewrite(_downgrade_spec)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("phase_total")
        batch.drop_column("phase_done")
        batch.drop_column("phase")

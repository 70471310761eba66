"""stored jobs keep naming the method that ran: flap → flap-headsum, wanda-sp → wanda-sp-dense

``flap`` and ``wanda-sp`` now follow their official code; the engine's earlier readings, which every job
stored before this revision ran, are kept as ``flap-headsum`` and ``wanda-sp-dense``. Job specs are rewritten
so that a stored job (and a re-run of it) still names what it computed. Downgrading maps the two names back;
jobs of methods the older code lacks (gisp-paper, and the official flap / wanda-sp) keep their names, which
that code then refuses to run.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RENAMED = {"flap": "flap-headsum", "wanda-sp": "wanda-sp-dense"}


def _rename(spec: Any, names: dict[str, str]) -> Any:
    if isinstance(spec, dict) and spec.get("method") in names:
        return {**spec, "method": names[spec["method"]]}
    return spec


def _rewrite(names: dict[str, str]) -> None:
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON))
    connection = op.get_bind()
    for job_id, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        renamed = _rename(spec, names)
        if renamed is not spec:
            connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(spec=renamed))


def upgrade() -> None:
    _rewrite(RENAMED)


def downgrade() -> None:
    _rewrite({new: old for old, new in RENAMED.items()})

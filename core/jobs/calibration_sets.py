"""Uploaded calibration sets: validated with the engine's own rules, stored as JSONL, fingerprinted."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from core.data.calibration import parse_calibration_bytes
from core.db.base import new_id
from core.db.models import CalibrationSet
from core.jobs.crud import decode_cursor, encode_cursor
from core.pruning_spec import Objective
from core.storage import Storage, calibration_key


@dataclass(frozen=True)
class ParsedSet:
    jsonl: bytes
    item_count: int


def normalise_upload(data: bytes, objective: Objective, *, filename: str) -> ParsedSet:
    """Validate an upload and re-serialise it as JSONL; raises CalibrationError (with the field) when bad.

    Plain text becomes one ``{"text"}`` record, so a worker always reads the same format back.
    """
    items = parse_calibration_bytes(data, objective, filename=filename)
    lines = [json.dumps(item.model_dump(), ensure_ascii=False, sort_keys=True) for item in items]
    return ParsedSet(jsonl=("\n".join(lines) + "\n").encode("utf-8"), item_count=len(items))


def create_calibration_set(
    *,
    session: Session,
    storage: Storage,
    tenant_id: str,
    objective: Objective,
    parsed: ParsedSet,
    name: str | None,
) -> CalibrationSet:
    set_id = new_id("cal")
    stored = storage.put_bytes(
        calibration_key(tenant_id, set_id), parsed.jsonl, content_type="application/jsonl"
    )
    record = CalibrationSet(
        id=set_id,
        tenant_id=tenant_id,
        name=name,
        objective=objective.value,
        item_count=parsed.item_count,
        size_bytes=stored.size,
        sha256=stored.sha256,
        storage_key=stored.key,
    )
    session.add(record)
    session.flush()
    return record


def get_calibration_set(*, session: Session, tenant_id: str, set_id: str) -> CalibrationSet | None:
    return session.scalar(
        select(CalibrationSet).where(CalibrationSet.id == set_id, CalibrationSet.tenant_id == tenant_id)
    )


def list_calibration_sets(
    *, session: Session, tenant_id: str, objective: Objective | None, cursor: str | None, limit: int
) -> tuple[list[CalibrationSet], str | None]:
    """The tenant's uploads, newest first; the cursor is the (created_at, id) of the previous page's last."""
    query = select(CalibrationSet).where(CalibrationSet.tenant_id == tenant_id)
    if objective is not None:
        query = query.where(CalibrationSet.objective == objective.value)
    if cursor:
        created_at, set_id = decode_cursor(cursor)
        query = query.where(
            or_(
                CalibrationSet.created_at < created_at,
                and_(CalibrationSet.created_at == created_at, CalibrationSet.id < set_id),
            )
        )
    order = (CalibrationSet.created_at.desc(), CalibrationSet.id.desc())
    records = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    last = records[limit - 1] if len(records) > limit else None
    return records[:limit], encode_cursor(last.created_at, last.id) if last else None

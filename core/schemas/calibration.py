"""Uploaded calibration sets."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CalibrationSetPublic(BaseModel):
    id: str
    name: str | None = None
    objective: str
    item_count: int
    size_bytes: int
    fingerprint: str = Field(..., description="sha256 of the stored data.jsonl")
    created_at: datetime


class CalibrationSetsPublic(BaseModel):
    data: list[CalibrationSetPublic]
    next_cursor: str | None = None

"""Job request and response bodies.

``JobSpec`` is what a user submits, what the job row stores and what the worker runs: the engine's own
``PruneSettings`` extended with what only a job has (the model, the calibration source, the layout of its
target checkpoints, evaluations, metadata). Validating it resolves every engine default, so the stored spec
is the *effective* run and a job's page shows exactly what ran.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.data.tasks import CMQA, CMQA_TASKS
from core.jobs.states import Phase
from core.pruning_spec import Layout, PruneSettings

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
MODEL_ID_RE = re.compile(rf"{_NAME}/{_NAME}")
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
SET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
SET_ID_RE = re.compile(r"cal_[0-9a-f]{32}")
LOCAL_PREFIX = "local/"

EVALUATIONS: tuple[str, ...] = ("perplexity", "gsm8k", "efficiency", CMQA, *CMQA_TASKS)
"""Evaluation names a job may ask for: WikiText-2 test perplexity, GSM8K, speed and size, CMQA tasks."""


class SpecError(ValueError):
    """A request that parses but names something unusable; carries the offending body field."""

    def __init__(self, field: str, message: str, code: str = "validation_error") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


class ModelRef(BaseModel):
    """A hub model ``org/name`` (optionally at a revision) or a server-side ``local/<name>``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        ...,
        max_length=200,
        description="'local/<name>' (a model the operator offers: GET /v1/models) or a hub id 'org/name'",
        examples=["local/smollm2"],
    )
    revision: str | None = Field(
        None, max_length=100, description="hub branch, tag or commit (hub models only)"
    )

    @field_validator("id")
    @classmethod
    def _plain_reference(cls, value: str) -> str:
        # Only two plain name segments: no absolute paths, no '..', no URLs or schemes.
        if not MODEL_ID_RE.fullmatch(value) or ".." in value:
            raise ValueError("must be a hub id 'org/name' or 'local/<name>' (letters, digits, '.', '_', '-')")
        return value

    @field_validator("revision")
    @classmethod
    def _plain_revision(cls, value: str | None) -> str | None:
        if value is not None and (not REVISION_RE.fullmatch(value) or ".." in value):
            raise ValueError("must be a branch, tag or commit name")
        return value

    @property
    def is_local(self) -> bool:
        return self.id.startswith(LOCAL_PREFIX)

    @property
    def local_name(self) -> str:
        return self.id[len(LOCAL_PREFIX) :]


class CalibrationRef(BaseModel):
    """A named set resolved in the server's data folder, or the id of a set uploaded by the tenant."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None,
        max_length=64,
        description="a named set (GET /v1/calibration-sets), e.g. wikitext2, c4, cmqa, gsm8k",
        examples=["wikitext2"],
    )
    set_id: str | None = Field(
        None,
        max_length=36,
        description="an uploaded set's id (POST /v1/calibration-sets)",
        examples=["cal_0123456789abcdef0123456789abcdef"],
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not SET_NAME_RE.fullmatch(value):
            raise ValueError("must be a named set such as 'wikitext2' (no paths)")
        return value

    @field_validator("set_id")
    @classmethod
    def _set_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not SET_ID_RE.fullmatch(value):
            raise ValueError("must be an id returned by POST /v1/calibration-sets")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> CalibrationRef:
        if (self.name is None) == (self.set_id is None):
            raise ValueError("give exactly one of 'name' (a named set) or 'set_id' (an uploaded set)")
        return self


def _storable(value: str | int | float | bool | None) -> str | int | float | bool | None:
    """A value JSON and PostgreSQL's JSONB can hold: no NaN or Infinity (not JSON), no NUL (not in JSONB)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (JSON has no NaN or Infinity)")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


MetadataKey = Annotated[str, Field(min_length=1, max_length=128)]
MetadataValue = Annotated[
    Annotated[str, Field(max_length=4096)] | int | float | bool | None, AfterValidator(_storable)
]


class CurveRequest(BaseModel):
    """Measure the trajectory at many points after pruning, so a point can later be chosen by a bound
    (``GET /v1/jobs/{id}/select``) without pruning again.

    Each point is measured on the checkpoint as it would be downloaded (refitted when the run refits), on
    WikiText-2 test text, which calibration never reads.
    """

    model_config = ConfigDict(extra="forbid")

    points: int = Field(
        8, ge=2, le=64, description="points measured, evenly spaced in sparsity up to the largest target"
    )
    perplexity_windows: int = Field(
        32, ge=1, le=4096, description="WikiText-2 test windows of 128 tokens each point's perplexity reads"
    )
    cmqa_limit: int | None = Field(
        None,
        ge=1,
        le=5000,
        description="if set, CMQA accuracy (and its ratio to dense) on this many items a task",
    )
    latency: bool = Field(False, description="also time each point's forward pass over 128 tokens, batch 1")


class RunSettings(PruneSettings):
    """A run's settings as the command line and a job share them: the engine's, plus what it reports."""

    model_config = ConfigDict(extra="forbid")

    layout: Layout = Field(
        Layout.nonuniform,
        description="layout of the target checkpoints: nonuniform (per-layer sizes, as pruned) or uniform "
        "(equal sizes, a stock config); any checkpoint can also be downloaded in the other layout",
    )
    evaluations: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list,
        max_length=16,
        description="evaluations of the dense model and every target: " + ", ".join(EVALUATIONS),
        examples=[["perplexity"]],
    )

    curve: CurveRequest | None = Field(
        None, description="measure the trajectory at many points after pruning, for selection by a bound"
    )

    @field_validator("evaluations")
    @classmethod
    def _evaluation_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in EVALUATIONS:
                raise ValueError(f"'{value}' is not an evaluation; known: {', '.join(EVALUATIONS)}")
        if len(set(values)) != len(values):
            raise ValueError("each evaluation once")
        return values


class JobSpec(RunSettings):
    """A pruning job: the run's settings plus the model, the calibration source and the client's labels."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(..., description="the base model to prune")
    calibration: CalibrationRef = Field(..., description="the data the scores (and the refit) read")
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=64,
        description="free labels for the client, stored and returned as given",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if any("\x00" in key for key in value):
            raise ValueError("metadata keys must not contain NUL characters")
        if len(json.dumps(value)) > 8192:
            raise ValueError("metadata must stay under 8 KiB of JSON")
        return value

    @classmethod
    def parse(cls, body: Any) -> JobSpec:
        """Validate a request body; the first problem is raised as a SpecError naming its body field."""
        try:
            return cls.model_validate(body)
        except ValidationError as error:
            raise spec_error(error) from None

    def fingerprint(self) -> str:
        """sha256 of the canonical effective request: what an Idempotency-Key is compared against."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def spec_error(error: ValidationError) -> SpecError:
    """The first error of a validation, as the dotted body field it concerns and a plain message."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return SpecError(field, first["msg"].removeprefix("Value error, "))


class JobProgress(BaseModel):
    phase: Phase = Field(Phase.queued, description="what the job is doing now")
    phase_done: int | None = Field(
        None, description="units of the phase done: steps, checkpoints, evaluated models"
    )
    phase_total: int | None = Field(None, description="units of the phase in all")
    step: int = Field(0, description="pruning steps done")
    total_steps: int | None = Field(None, description="pruning steps in all")
    current_sparsity: float | None = Field(None, description="sparsity reached by the last step")
    calibration_loss: float | None = Field(
        None, description="calibration loss of the model the last step scored"
    )
    eta_seconds: float | None = Field(
        None, description="seconds left over every remaining phase; null until they can be estimated"
    )


class JobError(BaseModel):
    code: str
    message: str
    field: str | None = None


class CheckpointPublic(BaseModel):
    sparsity: float
    label: str
    status: str
    is_target: bool
    layout: str
    variant: str = (
        ""  # "" the job's own layout as a folder; else e.g. "uniform", "gguf-f16", "uniform-gguf-q8_0"
    )
    size_bytes: int | None = None
    download_url: str


class JobPublic(BaseModel):
    id: str
    status: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    request: JobSpec = Field(..., description="the effective run: the request with every default resolved")
    progress: JobProgress
    error: JobError | None = None
    checkpoints: list[CheckpointPublic] = Field(default_factory=list)


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = None


class EventPublic(BaseModel):
    id: int
    created_at: datetime
    kind: str
    data: dict[str, Any]


class EventsPublic(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None = None


class SparsityRange(BaseModel):
    min: float
    max: float


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    reached_sparsities: list[float] = Field(
        default_factory=list, description="sparsities the trajectory passed through; any may be asked for"
    )
    trajectory_range: SparsityRange | None = None


class CheckpointFile(BaseModel):
    name: str
    sha256: str
    size_bytes: int
    url: str = Field(..., description="presigned GET URL, valid for expires_in_seconds")


class CheckpointFiles(BaseModel):
    """Direct links into object storage, for checkpoints too large to stream through the API."""

    sparsity: float
    label: str
    expires_in_seconds: int
    files: list[CheckpointFile]


class CheckpointPending(BaseModel):
    """Answer (202) while a checkpoint is being materialised: poll the same URL again."""

    sparsity: float
    label: str
    status: str
    retry_after_seconds: int = 2


Cursor = Annotated[str | None, Field(description="opaque cursor from the previous page's next_cursor")]

"""Job request and response bodies.

``JobCreate`` is what a user submits; :meth:`JobCreate.to_prune_settings` turns it into the engine's own
``PruneSettings`` so the API refuses exactly what the engine would refuse, naming the same field.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.pruning_spec import Layout, Method, Normalization, Objective, PruneSettings, Schedule, Score

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
MODEL_ID_RE = re.compile(rf"^{_NAME}/{_NAME}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
SET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SET_ID_RE = re.compile(r"^cal_[0-9a-f]{32}$")
EVAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
LOCAL_PREFIX = "local/"

# Where a PruneSettings field lives in the public request body.
_PRUNE_FIELD_TO_BODY = {
    "samples": "calibration.samples",
    "seq_len": "calibration.seq_len",
    "batch_size": "calibration.batch_size",
    "reconstruction_samples": "calibration.reconstruction_samples",
}


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

    id: str = Field(..., examples=["local/tiny-llama", "HuggingFaceTB/SmolLM2-135M"])
    revision: str | None = None

    @field_validator("id")
    @classmethod
    def _plain_reference(cls, value: str) -> str:
        # Only two plain name segments: no absolute paths, no '..', no URLs or schemes.
        if not MODEL_ID_RE.match(value) or ".." in value:
            raise ValueError("must be a hub id 'org/name' or 'local/<name>' (letters, digits, '.', '_', '-')")
        return value

    @field_validator("revision")
    @classmethod
    def _plain_revision(cls, value: str | None) -> str | None:
        if value is not None and (not REVISION_RE.match(value) or ".." in value):
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

    name: str | None = Field(None, examples=["wikitext2"])
    set_id: str | None = Field(None, examples=["cal_0123456789abcdef0123456789abcdef"])
    samples: int | None = Field(None, description="calibration sequences per step (engine default)")
    seq_len: int | None = Field(None, description="tokens per calibration sequence (engine default)")
    batch_size: int | None = Field(None, description="sequences per micro-batch (engine default)")
    reconstruction_samples: int | None = Field(
        None, description="sequences the checkpoints' least-squares refit reads (engine default)"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not SET_NAME_RE.match(value):
            raise ValueError("must be a named set such as 'wikitext2' (no paths)")
        return value

    @field_validator("set_id")
    @classmethod
    def _set_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not SET_ID_RE.match(value):
            raise ValueError("must be an id returned by POST /v1/calibration-sets")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> CalibrationRef:
        if (self.name is None) == (self.set_id is None):
            raise ValueError("give exactly one of 'name' (a named set) or 'set_id' (an uploaded set)")
        return self


MetadataValue = str | int | float | bool | None


class JobCreate(BaseModel):
    """A pruning job as submitted."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef
    calibration: CalibrationRef
    objective: Objective = Objective.perplexity
    method: Method = Method.gisp
    sparsities: list[float] = Field(..., min_length=1, max_length=64, examples=[[0.2, 0.4]])
    steps: int | None = Field(None, description="iterative steps up to the largest target (engine default)")
    layout: Layout = Layout.nonuniform
    schedule: Schedule | None = Field(None, description="linear or cosine (engine default)")
    normalization: Normalization | None = Field(None, description="params or reference (engine default)")
    score: Score | None = Field(
        None, description="gisp / gisp-oneshot: taylor, fisher or refit-fisher (engine default)"
    )
    protected_layers: list[int] | None = None
    bias_compensation: bool | None = Field(
        None, description="fold removed structures' mean output into biases (engine default: on for gisp)"
    )
    reconstruction: bool | None = Field(
        None,
        description="refit each checkpoint's o_proj / down_proj by least squares on the calibration data "
        "(engine default: on)",
    )
    seed: int = 0
    evaluations: list[str] = Field(default_factory=list, max_length=16, examples=[["perplexity"]])
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @field_validator("evaluations")
    @classmethod
    def _evaluation_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not EVAL_RE.match(value):
                raise ValueError(f"'{value}' is not an evaluation name")
        return values

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if len(json.dumps(value)) > 8192:
            raise ValueError("metadata must stay under 8 KiB of JSON")
        return value

    def to_prune_settings(self) -> PruneSettings:
        """The engine's settings for this job; errors are re-raised as SpecError naming the body field."""
        values: dict[str, Any] = {
            "method": self.method,
            "objective": self.objective,
            "sparsities": self.sparsities,
            "protected_layers": self.protected_layers,
            "seed": self.seed,
        }
        optional = {
            "steps": self.steps,
            "schedule": self.schedule,
            "normalization": self.normalization,
            "score": self.score,
            "bias_compensation": self.bias_compensation,
            "reconstruction": self.reconstruction,
            "samples": self.calibration.samples,
            "seq_len": self.calibration.seq_len,
            "batch_size": self.calibration.batch_size,
            "reconstruction_samples": self.calibration.reconstruction_samples,
        }
        values.update({name: value for name, value in optional.items() if value is not None})  # else engine's
        try:
            return PruneSettings(**values)
        except ValidationError as error:
            first = error.errors()[0]
            loc = [str(part) for part in first["loc"]]
            head = _PRUNE_FIELD_TO_BODY.get(loc[0], loc[0]) if loc else "body"
            field = ".".join([head, *loc[1:]])
            message = first["msg"].removeprefix("Value error, ")
            raise SpecError(field, message) from None

    def fingerprint(self) -> str:
        """sha256 of the canonical request: what an Idempotency-Key is compared against."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class JobProgress(BaseModel):
    step: int = 0
    total_steps: int | None = None
    current_sparsity: float | None = None
    calibration_loss: float | None = None
    eta_seconds: float | None = None


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
    request: JobCreate
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

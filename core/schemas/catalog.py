"""What a tenant may submit: local models and calibration sets (named and uploaded)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.schemas.calibration import CalibrationSetPublic


class ModelPublic(BaseModel):
    id: str = Field(..., examples=["local/smollm2-135m-instruct"], description="use as the job's model.id")
    name: str
    format: str = Field(..., description="safetensors, gguf, or other (weights the engine may refuse)")
    family: str | None = Field(None, description="config.json model_type (GGUF: general.architecture)")
    supported: bool = Field(
        ..., description="whether the engine prunes this family (Llama, Mistral, Qwen2, Qwen3)"
    )
    parameters: int | None = Field(None, description="from the weights' headers; null when unreadable")
    size_bytes: int


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    hub_models_allowed: bool = Field(..., description="whether hub ids (org/name) are accepted too")


class NamedCalibrationSetPublic(BaseModel):
    name: str = Field(..., examples=["wikitext2"], description="use as the job's calibration.name")
    objective: str


class CalibrationCatalogPublic(BaseModel):
    named: list[NamedCalibrationSetPublic] = Field(
        default_factory=list, description="named sets in the server's data folder (first page only)"
    )
    data: list[CalibrationSetPublic] = Field(..., description="the tenant's uploads, newest first")
    next_cursor: str | None = None

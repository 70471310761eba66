"""What a pruning run is asked to do, shared by the CLI, the API's JobSpec and the engine.

Kept free of torch so the API process can validate a job with exactly the rules the engine obeys.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class Objective(str, Enum):
    """The model-level loss whose mean gradient drives the importance scores."""

    perplexity = "perplexity"  # causal-LM loss on plain calibration text
    margin = "margin"  # multiple choice: correct answer's loss minus the wrong answers'
    answer = "answer"  # loss on the reference answer's tokens, given the prompt (GSM8K-style)


class Method(str, Enum):
    """How structures are scored and removed; every method shares one loop and one accounting."""

    gisp = "gisp"
    gisp_oneshot = "gisp-oneshot"
    wanda_sp = "wanda-sp"
    flap = "flap"
    magnitude = "magnitude"
    random = "random"


class Schedule(str, Enum):
    linear = "linear"
    cosine = "cosine"


class Normalization(str, Enum):
    """How a structure's summed score is divided so heads and channels share one ranking.

    ``params``: by the structure's own parameter count (what a removal actually saves).
    ``reference``: the constants of the authors' code (heads / 4*head_dim*hidden, channels / 3*intermediate).
    """

    params = "params"
    reference = "reference"


class Score(str, Enum):
    """What the gradient methods (gisp, gisp-oneshot) rank structures by.

    ``taylor``: the paper's first-order score, Σ |W ⊙ ḡ| over a structure's weights.
    ``fisher``: the empirical Fisher of a gate on the structure's output, Σ_s (∂L_s/∂m)² over calibration
    sequences: a second-order estimate of the loss a removal costs, from the same backward pass.
    ``refit-fisher``: the same Fisher, of the removal the least-squares refit leaves behind: the gate scales
    only what the structure's input cannot be predicted from the layer's other inputs (its regression
    residual), since the refit writes the predictable part back. One extra forward pass a step.
    """

    taylor = "taylor"
    fisher = "fisher"
    refit_fisher = "refit-fisher"


class Layout(str, Enum):
    nonuniform = "nonuniform"  # per-layer sizes; ships its model code (trust_remote_code)
    uniform = "uniform"  # equal sizes in every layer; loads in stock transformers


class PruneSettings(BaseModel):
    """Every knob of a pruning run. Defaults are the ones BENCHMARKS.md justifies."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    method: Method = Method.gisp
    objective: Objective = Objective.perplexity
    sparsities: list[float] = Field(..., min_length=1, description="target parameter sparsities in (0, 1)")
    steps: int = Field(20, ge=1, le=1000, description="iterative steps up to the largest target")
    schedule: Schedule = Schedule.linear
    normalization: Normalization = Normalization.params
    score: Score = Score.taylor
    protected_first_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the first layers never pruned"
    )
    protect_last_layer: bool = True
    protected_layers: list[int] | None = Field(
        None, description="explicit protected layer indices; overrides the two settings above"
    )
    samples: int = Field(32, ge=1, le=100_000, description="calibration sequences per step")
    seq_len: int = Field(128, ge=8, le=32_768, description="tokens per calibration sequence")
    batch_size: int = Field(8, ge=1, le=1024, description="sequences per forward/backward micro-batch")
    seed: int = 0
    bias_compensation: bool | None = Field(
        None,
        validate_default=True,
        description="gisp / gisp-oneshot (on by default there): fold each removed head's or channel's mean "
        "output into the output bias (FLAP's closed form), measured on the model the structure is removed "
        "from; scores then count only each feature's deviation from its mean",
    )

    reconstruction: bool = Field(
        True,
        description="refit each checkpoint's o_proj / down_proj by least squares so every layer's output "
        "matches the dense layer's on calibration tokens (a closed-form solve, no training; the pruned "
        "structures stay as chosen)",
    )
    reconstruction_samples: int = Field(
        128, ge=1, le=100_000, description="calibration sequences of seq_len tokens the refit reads"
    )

    @field_validator("sparsities")
    @classmethod
    def _sparsities_in_range_and_distinct(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 < value < 1.0:
                raise ValueError(f"each sparsity must lie strictly between 0 and 1, got {value}")
        rounded = [round(v, 6) for v in values]
        if len(set(rounded)) != len(rounded):
            raise ValueError(f"sparsities must be distinct, got {values}")
        return sorted(values)

    @field_validator("protected_layers")
    @classmethod
    def _protected_layers_non_negative(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v < 0 for v in values):
            raise ValueError("protected layer indices must be >= 0")
        return values

    @field_validator("bias_compensation")
    @classmethod
    def _compensation_for_gradient_methods(cls, value: bool | None, info: ValidationInfo) -> bool:
        """On by default for the Taylor methods (it wins on every measured sparsity); refused for the rest."""
        method = info.data.get("method")
        gradient_method = method in (Method.gisp, Method.gisp_oneshot)
        if value is None:
            return gradient_method
        if value and not gradient_method and method is not None:
            raise ValueError(
                f"bias_compensation applies to gisp and gisp-oneshot, not {method.value}"
                + (" (FLAP always compensates)" if method is Method.flap else "")
            )
        return value

    @field_validator("score")
    @classmethod
    def _score_for_gradient_methods(cls, value: Score, info: ValidationInfo) -> Score:
        method = info.data.get("method")
        if value is not Score.taylor and method not in (None, Method.gisp, Method.gisp_oneshot):
            raise ValueError(f"score applies to gisp and gisp-oneshot, not {method.value}")
        return value

    @model_validator(mode="after")
    def _one_shot_methods_take_one_step(self) -> PruneSettings:
        if self.method in ONE_SHOT_METHODS:
            self.steps = 1
        return self

    @property
    def max_sparsity(self) -> float:
        return max(self.sparsities)


ONE_SHOT_METHODS = frozenset(
    {Method.gisp_oneshot, Method.wanda_sp, Method.flap, Method.magnitude, Method.random}
)

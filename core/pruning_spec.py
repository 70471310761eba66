"""What a pruning run is asked to do: declared once, here, for the engine, the CLI and the job API.

``PruneSettings`` is the engine's own settings type. The API's ``JobSpec`` extends it (model, calibration
source, layout, evaluations) rather than copying its fields, the CLI derives its flags from its fields, and
the trajectory records it, so the three can never offer different options. Validation resolves every
default (``steps``, ``score``, ``bias_compensation`` depend on the method): a validated instance is the
*effective* run, which is what a job stores and shows.

Methods are described here by their traits (:data:`METHODS`), torch-free, so the API refuses exactly the
combinations the engine could not honour; the engine's implementations live in ``core.engine.methods``.

Kept free of torch so the API process can validate a job with exactly the rules the engine obeys.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from core.errors import UserInputError
from core.families import Family

MAX_LAYER_INDEX = 1023  # no supported model comes near; bounds the request's lists
DEFAULT_STEPS = 20
LABEL_DECIMALS = 4
# The authors' GISP run (uncc-efficient-ai/GISP, script/GISP/c4/GISPv2_0_*.yml): 112 linear steps to a
# structure ratio of 0.7, each scoring the whole calibration set of 2000 windows of 256 tokens.
PAPER_STEPS = 112
PAPER_STRUCTURE_RATIO = 0.7
PAPER_SAMPLES = 2000
PAPER_SEQ_LEN = 256


def sparsity_label(sparsity: float) -> str:
    """Canonical text of a sparsity, used in URLs, storage keys and uniqueness (LABEL_DECIMALS decimals).

    A checkpoint is found by its label, so every sparsity a run accepts must keep a label of its own that
    reads back as a valid sparsity: :meth:`PruneSettings._sparsities_in_range_and_distinct` refuses the rest.
    """
    return f"{round(float(sparsity), LABEL_DECIMALS):.{LABEL_DECIMALS}f}"


class Objective(str, Enum):
    """The model-level loss whose mean gradient drives the importance scores."""

    perplexity = "perplexity"  # causal-LM loss on plain calibration text
    margin = "margin"  # multiple choice: correct answer's loss minus the wrong answers'
    answer = "answer"  # loss on the reference answer's tokens, given the prompt (GSM8K-style)


class Method(str, Enum):
    """How structures are scored and removed; every method shares one loop and one accounting."""

    gisp = "gisp"
    gisp_oneshot = "gisp-oneshot"
    gisp_paper = "gisp-paper"
    wanda_sp = "wanda-sp"
    wanda_sp_dense = "wanda-sp-dense"
    flap = "flap"
    flap_headsum = "flap-headsum"
    magnitude = "magnitude"
    random = "random"


class Score(str, Enum):
    """What the gradient methods rank structures by.

    ``taylor``: the paper's first-order score, Σ |W ⊙ ḡ| over a structure's weights.
    ``fisher``: the empirical Fisher of a gate on the structure's output, Σ_s (∂L_s/∂m)² over calibration
    items: a second-order estimate of the loss a removal costs, from the same backward pass.
    ``refit-fisher``: the same Fisher, of the removal the least-squares refit leaves behind: the gate scales
    only what the structure's input cannot be predicted from the layer's other inputs (its regression
    residual), since the refit writes the predictable part back. One extra forward pass a step.
    """

    taylor = "taylor"
    fisher = "fisher"
    refit_fisher = "refit-fisher"


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


class Layout(str, Enum):
    nonuniform = "nonuniform"  # per-layer sizes; ships its model code (trust_remote_code)
    uniform = "uniform"  # equal sizes in every layer; loads in stock transformers


@dataclass(frozen=True)
class MethodTraits:
    """What a method reads and how it runs: the facts validation, the loop and the docs rely on."""

    summary: str
    reads: Literal["gradients", "activations", "weights", "nothing"]
    iterative: bool  # scores again at every step (else once, on the dense model)
    compensation: Literal[
        "optional", "always", "never"
    ]  # bias compensation: a switch (on by default), built in, or none
    # Reproduces its authors' procedure as published: no score choice, its own schedule, selection and
    # defaults (see ``PAPER_*``), so that results can be compared with the original.
    exact: bool = False
    # Scored again for every target, on the model pruned to the previous one (else once, or every step).
    per_target: bool = False
    # Leaves the first 10 % and the last layer alone by default (FLAP and Wanda-sp prune every layer).
    protects_layers: bool = True

    @property
    def takes_score(self) -> bool:
        return self.reads == "gradients" and not self.exact


METHODS: dict[Method, MethodTraits] = {
    Method.gisp: MethodTraits(
        "GISP: global ranking of first-order (or Fisher) scores, recomputed at every step",
        "gradients",
        True,
        "optional",
    ),
    Method.gisp_oneshot: MethodTraits(
        "GISP's scores computed once on the dense model, then removed in one ranking",
        "gradients",
        False,
        "optional",
    ),
    Method.gisp_paper: MethodTraits(
        "GISP exactly as the authors' code runs it: their block weights and normalisation, 112 linear "
        "steps to a structure ratio, the whole calibration set every step, no compensation, no refit",
        "gradients",
        True,
        "never",
        exact=True,
    ),
    Method.wanda_sp: MethodTraits(
        "Wanda-sp as the FLAP repository runs it: weight magnitude times input norm, the same fraction of heads and "
        "channels removed from every layer, each layer measured after the layers before it are pruned",
        "activations",
        False,
        "never",
        per_target=True,
        protects_layers=False,
    ),
    Method.wanda_sp_dense: MethodTraits(
        "Wanda-sp's scores from one pass on the dense model, ranked as fractions within each layer",
        "activations",
        False,
        "never",
    ),
    Method.flap: MethodTraits(
        "FLAP as its official code runs it: squared attention fluctuation, features standardised per layer "
        "then averaged per head, one global ranking of every layer, bias compensation",
        "activations",
        False,
        "always",
        protects_layers=False,
    ),
    Method.flap_headsum: MethodTraits(
        "FLAP's fluctuation summed per head, heads and channels standardised per layer, bias compensation",
        "activations",
        False,
        "always",
    ),
    Method.magnitude: MethodTraits(
        "weight magnitude, block-normalised, global ranking", "weights", False, "never"
    ),
    Method.random: MethodTraits(
        "random scores, global ranking (a floor to compare with)", "nothing", False, "never"
    ),
}


class ExperimentalSettings(BaseModel):
    """Options kept for experiments and comparisons: each measured no better than its default.

    They stay reachable so a published comparison can be re-run, and stay out of the way of everyone else.
    """

    model_config = ConfigDict(extra="forbid")

    normalization: Normalization = Field(
        Normalization.params, description="score normalisation: params (default) or the authors' constants"
    )
    schedule: Schedule = Field(Schedule.linear, description="how step targets are spread: linear or cosine")
    protected_first_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the first layers never pruned (unless protected_layers)"
    )
    protect_last_layer: bool = Field(True, description="never prune the last layer (unless protected_layers)")
    structure_ratio: float = Field(
        PAPER_STRUCTURE_RATIO,
        gt=0.0,
        lt=1.0,
        description="gisp-paper: the fraction of all heads and channels its linear schedule ends at",
    )


LayerIndex = Annotated[int, Field(ge=0, le=MAX_LAYER_INDEX)]


class PruneSettings(BaseModel):
    """Every knob of a pruning run. Defaults are the ones BENCHMARKS.md justifies.

    Fields are ordered so that each cross-field rule sits on the later field of its pair (``score`` after
    ``method`` and ``reconstruction``): the error then names the field a user must change.
    """

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        Method.gisp, description="how structures are scored: " + ", ".join(m.value for m in Method)
    )
    objective: Objective = Field(
        Objective.perplexity,
        description="the loss the scores protect: perplexity, margin (multiple choice) or answer",
    )
    sparsities: list[float] = Field(
        ...,
        min_length=1,
        max_length=64,
        description="target fractions of decoder parameters to remove, each in (0, 1); one checkpoint per target",
        examples=[[0.2, 0.4]],
    )
    samples: int = Field(
        32, ge=1, le=100_000, description="calibration sequences the scores read at every step"
    )
    seq_len: int = Field(128, ge=8, le=32_768, description="tokens per calibration sequence")
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="seeds the calibration draws (and the random method)"
    )
    reconstruction: bool = Field(
        True,
        description="refit each checkpoint's o_proj / down_proj by least squares so every layer's output matches "
        "the dense layer's on calibration tokens (closed form, no training; the structures stay as chosen)",
    )
    reconstruction_samples: int = Field(
        128, ge=1, le=100_000, description="calibration sequences of seq_len tokens the refit reads"
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=1000,
        validate_default=True,
        description=f"pruning steps up to the largest target (iterative methods; default {DEFAULT_STEPS}); "
        "one-shot methods take exactly one",
    )
    score: Score | None = Field(
        None,
        validate_default=True,
        description="gradient methods: taylor (default), fisher or refit-fisher (needs reconstruction)",
    )
    bias_compensation: bool | None = Field(
        None,
        validate_default=True,
        description="gisp and gisp-oneshot (default on): fold each removed head's or channel's mean output into "
        "the output bias (FLAP's closed form), measured on the model it is removed from",
    )
    protected_layers: list[LayerIndex] | None = Field(
        None,
        max_length=MAX_LAYER_INDEX + 1,
        description="layer indices never pruned (default: the first 10 % and the last layer)",
    )
    experimental: ExperimentalSettings = Field(
        default_factory=ExperimentalSettings, description="options for experiments; defaults measured best"
    )

    @model_validator(mode="before")
    @classmethod
    def _paper_defaults(cls, data: object) -> object:
        """gisp-paper's defaults are the authors' run: their calibration size, step count, and no refit."""
        if isinstance(data, dict) and data.get("method") in (Method.gisp_paper, Method.gisp_paper.value):
            data = dict(data)
            data.setdefault("reconstruction", False)
            data.setdefault("samples", PAPER_SAMPLES)
            data.setdefault("seq_len", PAPER_SEQ_LEN)
            data.setdefault("steps", PAPER_STEPS)
        return data

    @field_validator("sparsities")
    @classmethod
    def _sparsities_in_range_and_distinct(cls, values: list[float]) -> list[float]:
        labels: dict[str, float] = {}
        for value in values:
            if not 0.0 < value < 1.0:
                raise ValueError(f"each sparsity must lie strictly between 0 and 1, got {value}")
            label = sparsity_label(value)
            if not 0.0 < float(label) < 1.0:
                raise ValueError(
                    f"sparsity {value} rounds to {label}: checkpoints are labelled with {LABEL_DECIMALS} "
                    "decimals, so each sparsity must round to a value strictly between 0 and 1"
                )
            if label in labels:
                raise ValueError(
                    f"sparsities must be distinct at the label precision ({LABEL_DECIMALS} decimals): "
                    f"{labels[label]} and {value} would both be checkpoint {label}"
                )
            labels[label] = value
        return sorted(values)

    @field_validator("reconstruction_samples")
    @classmethod
    def _refit_size_needs_a_refit(cls, value: int, info: ValidationInfo) -> int:
        if (
            info.data.get("reconstruction") is False
            and value != cls.model_fields["reconstruction_samples"].default
        ):
            raise ValueError("reconstruction_samples sizes the refit, which reconstruction: false turns off")
        return value

    @field_validator("steps")
    @classmethod
    def _steps_for_iterative_methods(cls, value: int | None, info: ValidationInfo) -> int:
        traits = _traits(info)
        if traits is None or traits.iterative:
            return DEFAULT_STEPS if value is None else value
        if value not in (None, 1):
            raise ValueError(f"{info.data['method'].value} scores once and removes in one step; omit steps")
        return 1

    @field_validator("score")
    @classmethod
    def _score_for_gradient_methods(cls, value: Score | None, info: ValidationInfo) -> Score | None:
        traits = _traits(info)
        if traits is not None and not traits.takes_score:
            if value is not None:
                raise ValueError(
                    f"score applies to the gradient methods (gisp, gisp-oneshot), not {info.data['method'].value}"
                )
            return None
        if value is Score.refit_fisher and info.data.get("reconstruction") is False:
            raise ValueError(
                "refit-fisher ranks by what the refit cannot restore; it needs reconstruction: true"
            )
        return Score.taylor if value is None else value

    @field_validator("bias_compensation")
    @classmethod
    def _compensation_for_gradient_methods(cls, value: bool | None, info: ValidationInfo) -> bool:
        """On by default for the gradient methods (it wins on every measured sparsity); refused for the rest."""
        traits = _traits(info)
        if traits is None or traits.compensation == "optional":
            return True if value is None else value
        if value:
            method = info.data["method"].value
            raise ValueError(
                f"bias_compensation applies to gisp and gisp-oneshot, not {method}"
                + (" (FLAP always compensates)" if traits.compensation == "always" else "")
            )
        return False

    @field_validator("protected_layers")
    @classmethod
    def _distinct_layers(cls, values: list[int] | None) -> list[int] | None:
        return None if values is None else sorted(set(values))

    @property
    def traits(self) -> MethodTraits:
        return METHODS[self.method]

    @property
    def step_count(self) -> int:
        assert self.steps is not None  # resolved by validation
        return self.steps

    @property
    def max_sparsity(self) -> float:
        return max(self.sparsities)

    def engine_settings(self) -> PruneSettings:
        """Just the engine's part of a richer spec (a job's), e.g. to record in a trajectory."""
        return PruneSettings.model_validate(self.model_dump(include=set(PruneSettings.model_fields)))


def _traits(info: ValidationInfo) -> MethodTraits | None:
    method = info.data.get("method")
    return None if method is None else METHODS[method]


ONE_SHOT_METHODS = frozenset(method for method, traits in METHODS.items() if not traits.iterative)


SettingsT = TypeVar("SettingsT", bound=PruneSettings)


def fit_to_layout(settings: SettingsT, family: Family, layout: Layout) -> SettingsT:
    """Settings a run can honour when its target checkpoints take ``layout``: decided before hours of pruning.

    A uniform checkpoint of a family whose stock class has no output biases cannot carry bias compensation,
    unless the refit fits its weights alone (then compensation still serves the scores). There, compensation
    left at its default is turned off, and an explicit request for it (or FLAP, which always compensates) is
    refused, naming the field to change. Call it on the settings as submitted: it reads which fields were set.
    """
    fits = layout is not Layout.uniform or family.stock_output_biases
    if fits or settings.reconstruction:
        return settings
    why = f"a uniform {family.model_type} checkpoint has no output biases to carry bias compensation"
    if settings.traits.compensation == "always":
        raise UserInputError(
            f"{why}, which {settings.method.value} always applies; use layout nonuniform", field="layout"
        )
    if not settings.bias_compensation:
        return settings
    if "bias_compensation" in settings.model_fields_set:
        raise UserInputError(
            f"{why}; use layout nonuniform or set bias_compensation to false", field="bias_compensation"
        )
    return settings.model_copy(update={"bias_compensation": False})

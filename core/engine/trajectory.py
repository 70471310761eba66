"""The record of a pruning run: which structures went, in which order, and what each step measured.

Small (kilobytes to a few hundred) and, with the base model's identity, enough to rebuild any subnetwork on
it. Removals are kept in order, so the set alive at any sparsity is a prefix of one removal sequence:
every later subnetwork is a subset of every earlier one by construction.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from core.engine.structures import Geometry, Kind, PruningState, RemovalCosts, Structure
from core.errors import SparsityError
from core.pruning_spec import PruneSettings

SCHEMA_VERSION = 3
# Version 3 gave "flap" and "wanda-sp" to the official methods; what those names computed before is kept
# under these names, so an older trajectory still says (and re-runs) what it ran.
RENAMED_IN_V3 = {"flap": "flap-headsum", "wanda-sp": "wanda-sp-dense"}
EXPERIMENTAL_V1 = ("normalization", "schedule", "protected_first_fraction", "protect_last_layer")


@dataclass
class StepRecord:
    index: int  # 1-based
    total_steps: int
    target_sparsity: float
    sparsity: float  # measured after the step's removals
    structure_ratio: float
    threshold: float  # highest score among the structures removed this step
    loss: float  # calibration loss of the model entering the step
    seconds: float
    removed: list[list[int]]  # [layer, kind, index] in removal order
    parameters: int  # whole-model parameter count after the step

    @property
    def removed_structures(self) -> list[Structure]:
        return [Structure.from_list(r) for r in self.removed]


@dataclass
class Trajectory:
    geometry: Geometry
    settings: PruneSettings
    base_model: dict[str, Any]  # id, revision, weights_sha256, source
    calibration_fingerprint: str
    dense_parameters: int  # whole model, embeddings and LM head included
    protected_layers: list[int]
    schedule: list[float]  # target sparsity of every step
    steps: list[StepRecord] = field(default_factory=list)
    # Scores of the structures alive after the last step, per layer, in the order of that state's lists.
    survivor_scores: list[dict[str, list[float]]] = field(default_factory=list)
    compensation: dict[str, list[float]] | None = None  # FLAP: mean input per feature, "layer.attn|mlp"
    versions: dict[str, str] = field(default_factory=dict)
    batch_size: int = 8  # micro-batch of the run: a resume and every refit use it again, for the same sums
    schema_version: int = SCHEMA_VERSION

    @property
    def is_complete(self) -> bool:
        return len(self.steps) == len(self.schedule)

    @property
    def removal_sequence(self) -> list[Structure]:
        return [s for step in self.steps for s in step.removed_structures]

    @property
    def reached_sparsities(self) -> list[float]:
        return [step.sparsity for step in self.steps]

    @property
    def max_sparsity(self) -> float:
        return self.steps[-1].sparsity if self.steps else 0.0

    def state_at(self, sparsity: float) -> PruningState:
        """The subnetwork at the first point of the removal sequence whose sparsity reaches ``sparsity``."""
        if not 0.0 <= sparsity < 1.0:
            raise SparsityError(f"sparsity must lie in [0, 1), got {sparsity}", field="sparsity")
        if sparsity > self.max_sparsity + 1e-9:
            raise SparsityError(
                f"sparsity {sparsity:.4f} lies beyond this trajectory, which reaches {self.max_sparsity:.4f}",
                field="sparsity",
            )
        state = PruningState.dense(self.geometry)
        dense = self.geometry.dense_decoder_params
        remaining = dense
        cost = RemovalCosts(state)
        sequence = self.removal_sequence
        taken = 0
        for structure in sequence:
            if 1.0 - remaining / dense >= sparsity - 1e-12:  # PruningState.sparsity(), counted as it goes
                break
            remaining -= cost(structure)
            taken += 1
        state.remove_all(sequence[:taken])
        return state

    def state_after_steps(self, count: int) -> PruningState:
        state = PruningState.dense(self.geometry)
        state.remove_all(structure for step in self.steps[:count] for structure in step.removed_structures)
        return state

    def importance_order(self) -> dict[Structure, float]:
        """A total order of importance: removal position for removed structures, then survivors by score."""
        order: dict[Structure, float] = {}
        for position, structure in enumerate(self.removal_sequence):
            order[structure] = float(position)
        final = self.state_after_steps(len(self.steps))
        survivors: list[tuple[float, Structure]] = []
        for layer, (alive, scores) in enumerate(zip(final.layers, self.survivor_scores)):
            survivors += [(s, Structure(layer, Kind.head, h)) for h, s in zip(alive.heads, scores["heads"])]
            survivors += [
                (s, Structure(layer, Kind.channel, c)) for c, s in zip(alive.channels, scores["channels"])
            ]
        offset = float(len(order))
        for rank, (_, structure) in enumerate(sorted(survivors, key=lambda pair: pair[0])):
            order[structure] = offset + rank
        return order

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["settings"] = self.settings.model_dump(mode="json")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        data = dict(data)
        if data.get("schema_version") == 1:
            data = _upgrade_from_v1(data)
        if data.get("schema_version") == 2:
            data = _upgrade_from_v2(data)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unknown trajectory schema_version {data.get('schema_version')}")
        data["geometry"] = Geometry(**data["geometry"])
        data["settings"] = PruneSettings.model_validate(data["settings"])
        data["steps"] = [StepRecord(**step) for step in data["steps"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Trajectory:
        return cls.from_dict(json.loads(text))


def _upgrade_from_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the settings flat, with the micro-batch size among them and a score for every method."""
    settings = dict(data["settings"])
    data["batch_size"] = settings.pop("batch_size", 8)
    settings["experimental"] = {name: settings.pop(name) for name in EXPERIMENTAL_V1 if name in settings}
    if settings.get("method") not in ("gisp", "gisp-oneshot"):
        settings.pop("score", None)
        settings.pop("bias_compensation", None)
        settings.pop("steps", None)
    if not settings.get("reconstruction", True):
        settings.pop("reconstruction_samples", None)
    return {**data, "settings": settings, "schema_version": 2}


def _upgrade_from_v2(data: dict[str, Any]) -> dict[str, Any]:
    settings = dict(data["settings"])
    method = settings.get("method")
    if method in RENAMED_IN_V3:
        settings["method"] = RENAMED_IN_V3[method]
    return {**data, "settings": settings, "schema_version": 3}

"""Turning a point of a trajectory into a real, smaller checkpoint a user loads with ``from_pretrained``.

Two layouts:

* ``nonuniform``: exactly the subnetwork GISP chose; per-layer sizes live in config.json and the model code
  ships beside the weights (``auto_map``), so stock transformers loads it with ``trust_remote_code=True``.
* ``uniform``: equal head and channel counts in every layer (heads a multiple of the KV group), chosen by
  the trajectory's own importance order; saved as the base family's stock config, no custom code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from core.data.calibration import CalibrationItem, fingerprint
from core.engine.architectures import family_of, stock_config_for_uniform, to_gisp_model
from core.engine.compensation import compensate_checkpoint
from core.engine.loading import LoadedModel, file_sha256
from core.engine.model_card import write_model_card
from core.engine.modeling.configuration_gisp import GispConfig
from core.engine.modeling.modeling_gisp import GispForCausalLM
from core.engine.objectives import Batch, CalibrationPool
from core.engine.reconstruct import reconstruct_outputs
from core.engine.slicing import slice_model
from core.engine.structures import Kind, LayerState, PruningState, Structure
from core.engine.trajectory import Trajectory
from core.engine.versions import library_versions
from core.errors import UserInputError
from core.pruning_spec import Layout

MANIFEST = "gisp_manifest.json"
MANIFEST_VERSION = 1


def pruned_model(loaded: LoadedModel, trajectory: Trajectory, state: PruningState) -> GispForCausalLM:
    """The base model sliced to ``state``, with FLAP's bias compensation where the trajectory has one."""
    model = to_gisp_model(loaded.model)
    slice_model(model, PruningState.dense(trajectory.geometry), state)
    if trajectory.compensation:
        compensate_checkpoint(model, loaded.model, trajectory.compensation, state)
    return model


def checkpoint_model(
    loaded: LoadedModel,
    trajectory: Trajectory,
    state: PruningState,
    calibration: Sequence[CalibrationItem] | None,
    *,
    output_biases: bool = True,
) -> GispForCausalLM:
    """The model a checkpoint at ``state`` holds: the sliced model, refitted by least squares when the run
    asked for reconstruction (which reads ``calibration``, the run's own items), else as ``pruned_model``.

    ``output_biases=False`` (a stock family with no o_proj / down_proj bias) refits the weights alone.
    """
    if not trajectory.settings.reconstruction:
        return pruned_model(loaded, trajectory, state)
    batches = reconstruction_batches(loaded, trajectory, calibration)
    model = to_gisp_model(loaded.model)
    slice_model(model, PruningState.dense(trajectory.geometry), state)
    reconstruct_outputs(
        model, to_gisp_model(loaded.model), trajectory.geometry, state, batches, fit_bias=output_biases
    )
    return model


def checkpoint_at(
    loaded: LoadedModel,
    trajectory: Trajectory,
    sparsity: float,
    layout: Layout | str,
    calibration: Sequence[CalibrationItem] | None,
) -> tuple[PruningState, GispForCausalLM]:
    """The state and model of the ``layout`` checkpoint at ``sparsity``, as ``materialize`` saves it (a
    uniform one before its conversion to the stock class, which computes the same)."""
    if Layout(layout) is Layout.uniform:
        state = stock_uniform_state(loaded, trajectory, sparsity)
        biases = family_of(loaded.model.config).stock_output_biases
        return state, checkpoint_model(loaded, trajectory, state, calibration, output_biases=biases)
    state = trajectory.state_at(sparsity)
    return state, checkpoint_model(loaded, trajectory, state, calibration)


# the pool's draw for the refit: steps draw 0, 1, 2, ..., so this one is never a step's batch
RECONSTRUCTION_DRAW = -1


def reconstruction_batches(
    loaded: LoadedModel, trajectory: Trajectory, calibration: Sequence[CalibrationItem] | None
) -> list[Batch]:
    """The refit's calibration batches, drawn as the run drew its own, from the very items it pruned on."""
    if calibration is None:
        raise UserInputError(
            "this run refits its checkpoints on its calibration data (reconstruction); pass the same calibration",
            field="calibration",
        )
    if fingerprint(calibration) != trajectory.calibration_fingerprint:
        raise UserInputError(
            "the calibration data differs from the data this trajectory was pruned on", field="calibration"
        )
    settings = trajectory.settings
    pool = CalibrationPool(
        calibration,
        loaded.tokenizer,
        settings,
        trajectory.batch_size,
        samples=settings.reconstruction_samples,
    )
    return pool.batches(RECONSTRUCTION_DRAW)


def materialize(
    loaded: LoadedModel,
    trajectory: Trajectory,
    sparsity: float,
    out_dir: str | Path,
    *,
    layout: Layout | str = Layout.nonuniform,
    calibration: Sequence[CalibrationItem] | None = None,
) -> Path:
    """Write the checkpoint at ``sparsity`` (the first trajectory point reaching it) to ``out_dir``.

    ``calibration``: the run's items, needed when it refits its checkpoints (``reconstruction``).
    """
    return materialize_model(loaded, trajectory, sparsity, out_dir, layout=layout, calibration=calibration)[0]


def materialize_model(
    loaded: LoadedModel,
    trajectory: Trajectory,
    sparsity: float,
    out_dir: str | Path,
    *,
    layout: Layout | str = Layout.nonuniform,
    calibration: Sequence[CalibrationItem] | None = None,
) -> tuple[Path, nn.Module]:
    """``materialize``, also returning the model it saved, so its evaluation need not build it again."""
    layout = Layout(layout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state, model = checkpoint_at(loaded, trajectory, sparsity, layout, calibration)
    if layout is Layout.uniform:
        model = _as_stock_model(loaded, model, state)
    else:
        GispConfig.register_for_auto_class()
        GispForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    model.generation_config = loaded.model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    manifest = build_manifest(loaded, trajectory, state, sparsity, layout, model)
    write_model_card(out, manifest)
    manifest["files"] = {
        p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out, model


def refresh_model_card(folder: Path, *, evaluation: dict[str, Any] | None) -> None:
    """Rewrites a saved checkpoint's model card with its evaluation results, and the card's sha256 in the
    manifest with it."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    card = write_model_card(folder, manifest, evaluation=evaluation)
    manifest["files"][card.name] = file_sha256(card)
    manifest_path.write_text(json.dumps(manifest, indent=2))


def build_manifest(
    loaded: LoadedModel,
    trajectory: Trajectory,
    state: PruningState,
    requested: float,
    layout: Layout,
    model: nn.Module,
) -> dict[str, Any]:
    settings = trajectory.settings
    return {
        "manifest_version": MANIFEST_VERSION,
        "base_model": trajectory.base_model,
        "layout": layout.value,
        "requested_sparsity": requested,
        "sparsity": state.sparsity(),
        "structure_ratio": state.structure_ratio(),
        "decoder_parameters": state.decoder_params(),
        "dense_decoder_parameters": trajectory.geometry.dense_decoder_params,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dense_parameters": trajectory.dense_parameters,
        "layers": state.counts(),
        "method": settings.method.value,
        "objective": settings.objective.value,
        "settings": settings.model_dump(mode="json"),
        "calibration_fingerprint": trajectory.calibration_fingerprint,
        "protected_layers": trajectory.protected_layers,
        "versions": library_versions(),
    }


def uniform_state(trajectory: Trajectory, sparsity: float, *, valid_heads: Any = None) -> PruningState:
    """Equal counts in every layer, matching the global choice's head/channel balance and its sparsity.

    ``valid_heads(heads, kv_heads)`` says whether the stock family accepts a head count (stock Llama, for
    one, wants it to divide the hidden size); the closest valid count to the global choice's mean wins.
    """
    g = trajectory.geometry
    chosen = trajectory.state_at(sparsity)
    order = trajectory.importance_order()
    mean_heads = sum(len(s.heads) for s in chosen.layers) / g.num_layers
    shapes = sorted(
        ((kv, per) for kv in range(1, g.num_kv_heads + 1) for per in range(1, g.group_size + 1)),
        key=lambda shape: (abs(shape[0] * shape[1] - mean_heads), -shape[0] * shape[1], -shape[0]),
    )
    valid = [shape for shape in shapes if valid_heads is None or valid_heads(shape[0] * shape[1], shape[0])]
    if not valid:
        raise UserInputError("no equal head count fits the stock architecture", field="layout")
    kv_keep, per_group = valid[0]
    head_params = kv_keep * per_group * g.query_head_params + kv_keep * g.kv_head_params
    budget = g.dense_decoder_params * (1.0 - sparsity) / g.num_layers - head_params - g.fixed_layer_params
    channels = min(g.intermediate_size, max(1, math.floor(budget / g.channel_params)))

    def importance(layer: int, kind: Kind, index: int) -> float:
        return order.get(Structure(layer, kind, index), math.inf)

    layers = []
    for layer in range(g.num_layers):
        groups = []
        for kv in range(g.num_kv_heads):
            members = [h for h in range(g.num_heads) if g.kv_of(h) == kv]
            best = sorted(members, key=lambda h: importance(layer, Kind.head, h), reverse=True)[:per_group]
            groups.append((sum(importance(layer, Kind.head, h) for h in best), kv, best))
        kept_groups = sorted(groups, key=lambda item: item[0], reverse=True)[:kv_keep]
        heads = sorted(h for _, _, best in kept_groups for h in best)
        kv_heads = sorted(kv for _, kv, _ in kept_groups)
        ranked_channels = sorted(
            range(g.intermediate_size), key=lambda c: importance(layer, Kind.channel, c), reverse=True
        )
        layers.append(LayerState(heads, kv_heads, sorted(ranked_channels[:channels])))
    return PruningState(g, layers)


def stock_uniform_state(loaded: LoadedModel, trajectory: Trajectory, sparsity: float) -> PruningState:
    """The uniform layout restricted to head counts the base family's stock config accepts."""
    return uniform_state(trajectory, sparsity, valid_heads=_stock_accepts(loaded.model.config))


def _stock_accepts(base: Any) -> Any:
    def accepts(heads: int, kv_heads: int) -> bool:
        try:
            stock_config_for_uniform(base, heads, kv_heads, 1)
        except Exception:  # transformers raises its own validation error types here
            return False
        return True

    return accepts


def _as_stock_model(loaded: LoadedModel, gisp: GispForCausalLM, state: PruningState) -> nn.Module:
    counts = state.counts()[0]
    config = stock_config_for_uniform(
        loaded.model.config, counts["heads"], counts["kv_heads"], counts["channels"]
    )
    if gisp.config.o_proj_bias or gisp.config.down_proj_bias:
        _enable_stock_biases(config)
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.model.dtype)
    missing, unexpected = model.load_state_dict(gisp.state_dict(), strict=False)
    with torch.no_grad():
        for name in missing:
            if name.endswith(".bias"):  # biases the stock layout forces on, which the pruned model lacks
                model.get_parameter(name).zero_()
    missing = [m for m in missing if not m.endswith(".bias") and m != "lm_head.weight"]
    if missing or unexpected:
        raise UserInputError(
            f"the uniform layout does not fit the stock {config.model_type} model: {missing[:3]} {unexpected[:3]}",
            field="layout",
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def _enable_stock_biases(config: Any) -> None:
    """Stock Llama/Qwen3 carry an o_proj bias only with attention_bias (q/k/v biases then stay zero)."""
    if not family_of(config).stock_output_biases:
        raise UserInputError(
            f"bias compensation (FLAP, and GISP by default) needs output biases, which stock {config.model_type} "
            "lacks; use the nonuniform layout, or prune with bias_compensation=false",
            field="layout",
        )
    config.attention_bias = True
    config.mlp_bias = True

"""The least-squares refit of checkpoints: it solves its problem, moves only what lost inputs, brings the
pruned model closer to the dense one, and rebuilds identically from the trajectory and its calibration."""

from __future__ import annotations

import pytest
import torch

from core.data.calibration import TextItem
from core.engine.architectures import geometry_of, to_gisp_model
from core.engine.materialize import checkpoint_model, pruned_model, reconstruction_batches
from core.engine.objectives import CalibrationPool
from core.engine.pruner import prune
from core.engine.reconstruct import reconstruct_outputs
from core.engine.slicing import slice_model
from core.engine.structures import LayerState, PruningState
from core.errors import UserInputError
from core.pruning_spec import PruneSettings
from tests.engine.conftest import CORPUS, build_loaded

ITEMS = [TextItem(text=" ".join(CORPUS))]


def run(family: str = "llama", **overrides):
    loaded = build_loaded(family)
    values = dict(sparsities=[0.3, 0.5], steps=4, samples=4, seq_len=16, reconstruction_samples=16)
    values.update(overrides)
    if not values.get("reconstruction", True):
        values.pop("reconstruction_samples")
    return loaded, prune(loaded, ITEMS, PruneSettings(**values), batch_size=2)


def o_proj_inputs(model: torch.nn.Module, batches: list) -> torch.Tensor:
    """Layer 0's o_proj inputs over the batches' real tokens (layer 0 sees the embeddings in every model)."""
    seen = []
    current = {}
    handle = model.model.layers[0].self_attn.o_proj.register_forward_pre_hook(
        lambda _m, inputs: seen.append(inputs[0][current["mask"]].detach().double())
    )
    with torch.no_grad():
        for batch in batches:
            current["mask"] = batch.attention_mask.bool()
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    handle.remove()
    return torch.cat(seen)


def test_undamped_refit_meets_the_normal_equations() -> None:
    """Residual of the refitted layer-0 o_proj is orthogonal to every kept feature and to the constant."""
    loaded = build_loaded("llama")
    geometry = geometry_of(loaded.model.config)
    dense_state = PruningState.dense(geometry)
    layers = list(dense_state.layers)
    layers[0] = LayerState([0, 1, 3], [0, 1], list(range(60)))  # head 2 and 36 channels of layer 0 removed
    state = PruningState(geometry, layers)
    settings = PruneSettings(sparsities=[0.5], samples=16, seq_len=16)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings, 4).batches(0)
    dense = to_gisp_model(loaded.model)
    model = to_gisp_model(loaded.model)
    slice_model(model, dense_state, state)
    reconstruct_outputs(model, dense, geometry, state, batches, damping=0.0)

    full = o_proj_inputs(dense, batches)
    head_dim = geometry.head_dim
    kept = [h * head_dim + d for h in state.layers[0].heads for d in range(head_dim)]
    target = full @ dense.model.layers[0].self_attn.o_proj.weight.double().T
    refitted = model.model.layers[0].self_attn.o_proj
    fitted = full[:, kept] @ refitted.weight.double().T + refitted.bias.double()
    design = torch.cat([full[:, kept], torch.ones(full.shape[0], 1, dtype=full.dtype)], dim=1)
    residual_correlation = design.T @ (target - fitted)
    assert residual_correlation.abs().max() < 1e-6 * (design.T @ target).abs().max()
    # and it fits better than keeping the weights with FLAP's mean-compensating bias
    compensated = full[:, kept] @ dense.model.layers[0].self_attn.o_proj.weight.double()[:, kept].T
    removed = [i for i in range(full.shape[1]) if i not in kept]
    compensated += (
        full[:, removed].mean(0) @ dense.model.layers[0].self_attn.o_proj.weight.double()[:, removed].T
    )
    assert (target - fitted).square().sum() < (target - compensated).square().sum()


def test_refit_brings_the_pruned_model_closer_to_the_dense_one() -> None:
    loaded, trajectory = run()
    batches = reconstruction_batches(loaded, trajectory, ITEMS)
    state = trajectory.state_at(0.5)
    refitted = checkpoint_model(loaded, trajectory, state, ITEMS)
    plain = pruned_model(loaded, trajectory, state)  # FLAP-style compensation only

    def distance(model: torch.nn.Module) -> float:
        total = 0.0
        with torch.no_grad():
            for batch in batches:
                dense = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                pruned = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                mask = batch.attention_mask.bool()
                total += float((dense[mask] - pruned[mask]).square().sum())
        return total

    assert distance(refitted) < distance(plain)


def test_layers_that_lost_nothing_keep_their_weights_and_the_base_stays_intact() -> None:
    loaded, trajectory = run()
    before = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    state = trajectory.state_at(0.5)
    model = checkpoint_model(loaded, trajectory, state, ITEMS)
    last = len(state.layers) - 1
    assert last in trajectory.protected_layers
    base_layer = loaded.model.model.layers[last]
    torch.testing.assert_close(model.model.layers[last].mlp.down_proj.weight, base_layer.mlp.down_proj.weight)
    assert not model.model.layers[last].mlp.down_proj.bias.any()
    assert model.config.o_proj_bias and model.config.down_proj_bias
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_refit_rebuilds_identically_and_only_from_the_run_s_own_calibration() -> None:
    loaded, trajectory = run()
    state = trajectory.state_at(0.3)
    first = checkpoint_model(loaded, trajectory, state, ITEMS).state_dict()
    second = checkpoint_model(loaded, trajectory, state, ITEMS).state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(UserInputError, match="pass the same calibration") as missing:
        checkpoint_model(loaded, trajectory, state, None)
    assert missing.value.field == "calibration"
    with pytest.raises(UserInputError, match="differs from the data"):
        checkpoint_model(loaded, trajectory, state, [TextItem(text="other text " * 50)])


def test_runs_without_reconstruction_build_the_plain_pruned_model() -> None:
    loaded, trajectory = run(reconstruction=False)
    state = trajectory.state_at(0.5)
    plain = pruned_model(loaded, trajectory, state).state_dict()
    built = checkpoint_model(loaded, trajectory, state, None).state_dict()
    assert all(torch.equal(plain[k], built[k]) for k in plain)

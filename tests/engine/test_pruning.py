"""The pruning loop: targets, nesting, protected layers, every method, resume, and masked == sliced."""

from __future__ import annotations

import itertools

import pytest
import torch

from core.engine.architectures import geometry_of
from core.engine.masking import MASKED
from core.engine.materialize import pruned_model
from core.engine.structures import Kind, PruningState
from core.pruning_spec import Method
from tests.engine.conftest import ITEMS, build_loaded, prune, settings


def masked_copy(model: torch.nn.Module, state: PruningState) -> torch.nn.Module:
    """The base HF model with removed heads' o_proj columns and removed channels' down_proj columns zeroed."""
    import copy

    masked = copy.deepcopy(model)
    g = state.geometry
    with torch.no_grad():
        for layer, alive in zip(masked.model.layers, state.layers):
            for head in set(range(g.num_heads)) - set(alive.heads):
                layer.self_attn.o_proj.weight[:, head * g.head_dim : (head + 1) * g.head_dim] = 0
            for channel in set(range(g.intermediate_size)) - set(alive.channels):
                layer.mlp.down_proj.weight[:, channel] = 0
    return masked


@pytest.mark.parametrize(
    ("family", "heads", "kv_heads"),
    [("llama", 4, 4), ("llama", 4, 2), ("mistral", 4, 2), ("qwen2", 4, 2), ("qwen3", 4, 1)],
)
def test_sliced_model_matches_masked_model(family: str, heads: int, kv_heads: int) -> None:
    loaded = build_loaded(family, heads=heads, kv_heads=kv_heads)
    # slicing alone: compensation biases would make the sliced model differ from a zero mask on purpose
    trajectory = prune(loaded, ITEMS, settings(sparsities=[0.5], steps=5, bias_compensation=False))
    state = trajectory.state_at(0.5)
    sliced = pruned_model(loaded, trajectory, state)
    masked = masked_copy(loaded.model, state)
    ids = torch.randint(0, 300, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        expected = masked(input_ids=ids, attention_mask=mask).logits
        actual = sliced(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(actual[mask.bool()], expected[mask.bool()], atol=1e-4, rtol=0)
    assert sum(p.numel() for p in sliced.parameters()) < sum(p.numel() for p in loaded.model.parameters())


def test_partial_kv_groups_are_sliced_and_still_match() -> None:
    """A KV head that keeps some of its query heads stays; one that keeps none goes away physically."""
    from core.engine.structures import Structure

    loaded = build_loaded("llama", heads=4, kv_heads=2)
    trajectory = prune(loaded, ITEMS, settings(sparsities=[0.2], steps=1, bias_compensation=False))
    state = PruningState.dense(trajectory.geometry)
    for layer, head in ((0, 1), (1, 0), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)):
        state.remove(Structure(layer, Kind.head, head))
    for channel in range(0, 96, 3):
        state.remove(Structure(1, Kind.channel, channel))
    assert state.kv_head_of_query(0) == [0, 1, 1]  # KV head 0 now serves one query head, KV head 1 two
    assert state.layers[1].kv_heads == [0] and state.layers[2].kv_heads == []
    sliced = pruned_model(loaded, trajectory, state)
    g = state.geometry
    for layer, alive in zip(sliced.model.layers, state.layers):
        assert layer.self_attn.k_proj.out_features == len(alive.kv_heads) * g.head_dim
        assert layer.self_attn.q_proj.out_features == len(alive.heads) * g.head_dim
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(
            sliced(ids).logits, masked_copy(loaded.model, state)(ids).logits, atol=1e-4, rtol=0
        )


def test_every_target_is_reached_within_one_structure() -> None:
    loaded = build_loaded("llama")
    targets = [0.15, 0.3, 0.45]
    trajectory = prune(loaded, ITEMS, settings(sparsities=targets, steps=3))
    g = trajectory.geometry
    largest = g.query_head_params + g.kv_head_params
    by_target = {round(step.target_sparsity, 9): step for step in trajectory.steps}
    for target in targets:
        step = by_target[target]
        assert target <= step.sparsity < target + largest / g.dense_decoder_params
        assert trajectory.state_at(target).sparsity() == pytest.approx(step.sparsity)


def test_trajectory_is_nested() -> None:
    loaded = build_loaded("llama")
    trajectory = prune(loaded, ITEMS, settings(sparsities=[0.5], steps=5))
    removed = [tuple(r) for step in trajectory.steps for r in step.removed]
    assert len(removed) == len(set(removed)), "a structure was removed twice"
    points = [0.05 * i for i in range(1, 11)]
    states = [trajectory.state_at(s) for s in points]
    for earlier, later in itertools.pairwise(states):
        for a, b in zip(earlier.layers, later.layers):
            assert set(b.heads) <= set(a.heads)
            assert set(b.channels) <= set(a.channels)
            assert set(b.kv_heads) <= set(a.kv_heads)
    sparsities = [step.sparsity for step in trajectory.steps]
    assert sparsities == sorted(sparsities)


def test_protected_layers_are_never_pruned() -> None:
    loaded = build_loaded("llama", layers=10)
    trajectory = prune(loaded, ITEMS, settings(sparsities=[0.4], steps=2))
    assert trajectory.protected_layers == [0, 9]
    state = trajectory.state_at(0.4)
    for layer in (0, 9):
        assert state.counts()[layer] == {"heads": 4, "kv_heads": 2, "channels": 96}
    explicit = prune(loaded, ITEMS, settings(sparsities=[0.3], steps=2, protected_layers=[3, 4]))
    assert explicit.protected_layers == [3, 4]
    assert all(r[0] not in (3, 4) for step in explicit.steps for r in step.removed)


@pytest.mark.parametrize("method", [m for m in Method])
def test_every_method_runs_in_the_same_loop(method: Method) -> None:
    loaded = build_loaded("llama")
    trajectory = prune(loaded, ITEMS, settings(method=method, sparsities=[0.2, 0.4]))
    assert trajectory.is_complete
    assert trajectory.steps[-1].sparsity >= 0.4
    if method is Method.gisp_paper:  # its own schedule: the authors' linear structure ratios
        assert [round(s.target_sparsity, 6) for s in trajectory.steps] == [0.0, 0.233333, 0.466667, 0.7]
    elif method is not Method.gisp:
        assert len(trajectory.steps) == 2  # one scoring, one record per target
    compensates = method in (
        Method.flap,
        Method.flap_headsum,
        Method.gisp,
        Method.gisp_oneshot,
    )  # FLAP always
    assert (trajectory.compensation is not None) == compensates


def test_wanda_sp_prunes_every_layer_alike() -> None:
    loaded = build_loaded("llama", layers=6)
    trajectory = prune(loaded, ITEMS, settings(method=Method.wanda_sp, sparsities=[0.3], protected_layers=[]))
    channels = [c["channels"] for c in trajectory.state_at(0.3).counts()]
    assert max(channels) - min(channels) <= 1


def test_gisp_prunes_layers_unevenly_and_differs_from_one_shot() -> None:
    loaded = build_loaded("llama", layers=6)
    iterative = prune(loaded, ITEMS, settings(sparsities=[0.4], steps=4))
    channels = [c["channels"] for c in iterative.state_at(0.4).counts()]
    assert max(channels) - min(channels) > 1
    one_shot = prune(loaded, ITEMS, settings(method=Method.gisp_oneshot, sparsities=[0.4]))
    assert iterative.removal_sequence != one_shot.removal_sequence


@pytest.mark.parametrize("method", [Method.gisp, Method.flap, Method.gisp_oneshot])
def test_runs_are_deterministic_and_resume_equals_uninterrupted(method: Method) -> None:
    loaded = build_loaded("llama")
    run_settings = settings(method=method, sparsities=[0.1, 0.2, 0.4])
    full = prune(loaded, ITEMS, run_settings)
    again = prune(loaded, ITEMS, run_settings)
    assert [(s.removed, s.loss, s.threshold) for s in again.steps] == [
        (s.removed, s.loss, s.threshold) for s in full.steps
    ]

    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    partial = prune(loaded, ITEMS, run_settings, should_stop=stop_after_two)
    assert len(partial.steps) == 2 and not partial.is_complete
    resumed = prune(loaded, ITEMS, run_settings, resume=type(partial).from_json(partial.to_json()))
    assert [(s.removed, s.loss) for s in resumed.steps] == [(s.removed, s.loss) for s in full.steps]
    assert resumed.survivor_scores == full.survivor_scores
    assert resumed.compensation == full.compensation


def test_base_model_is_left_untouched() -> None:
    loaded = build_loaded("llama")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    prune(loaded, ITEMS, settings(method=Method.flap))
    prune(loaded, ITEMS, settings(), view=MASKED)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in loaded.model.parameters())


def test_masking_run_matches_slicing_run() -> None:
    loaded = build_loaded("llama")
    sliced = prune(loaded, ITEMS, settings())
    masked = prune(loaded, ITEMS, settings(), view=MASKED)
    assert [s.sparsity for s in masked.steps] == [s.sparsity for s in sliced.steps]
    assert masked.steps[0].removed == sliced.steps[0].removed


def test_parameter_accounting_matches_the_real_model() -> None:
    for family, heads, kv in (("llama", 4, 4), ("qwen2", 4, 2), ("qwen3", 4, 2)):
        loaded = build_loaded(family, heads=heads, kv_heads=kv)
        g = geometry_of(loaded.model.config)
        decoder = sum(p.numel() for n, p in loaded.model.named_parameters() if ".layers." in n)
        assert g.dense_decoder_params == decoder
        trajectory = prune(loaded, ITEMS, settings(sparsities=[0.35], steps=2, bias_compensation=False))
        state = trajectory.state_at(0.35)
        model = pruned_model(loaded, trajectory, state)
        assert state.decoder_params() == sum(
            p.numel() for n, p in model.named_parameters() if ".layers." in n
        )
        assert trajectory.steps[-1].parameters == sum(p.numel() for p in model.parameters())
        # compensation adds exactly one output bias per o_proj and down_proj, outside the sparsity accounting
        compensated = prune(loaded, ITEMS, settings(sparsities=[0.35], steps=2))
        model = pruned_model(loaded, compensated, compensated.state_at(0.35))
        biases = sum(
            layer.self_attn.o_proj.bias.numel() + layer.mlp.down_proj.bias.numel()
            for layer in model.model.layers
        )
        assert biases == 2 * g.hidden_size * g.num_layers
        assert compensated.state_at(0.35).decoder_params() + biases == sum(
            p.numel() for n, p in model.named_parameters() if ".layers." in n
        )


def test_removing_the_last_query_head_of_a_group_frees_its_kv_head() -> None:
    loaded = build_loaded("llama", heads=4, kv_heads=2)
    state = PruningState.dense(geometry_of(loaded.model.config))
    g = state.geometry
    from core.engine.structures import RemovalCosts, Structure

    cost = RemovalCosts(state)
    first = Structure(0, Kind.head, 0)
    assert cost(first) == g.query_head_params
    state.remove(first)
    second = Structure(0, Kind.head, 1)
    assert cost(second) == g.query_head_params + g.kv_head_params
    state.remove(second)
    assert state.layers[0].kv_heads == [1]
    assert state.kv_head_of_query(0) == [0, 0]


def test_removing_many_at_once_equals_removing_one_by_one() -> None:
    from core.engine.structures import Structure

    geometry = geometry_of(build_loaded("llama", heads=4, kv_heads=2).model.config)
    removals = [Structure(0, Kind.head, 1), Structure(1, Kind.channel, 5), Structure(0, Kind.head, 0)]
    removals += [Structure(2, Kind.head, 3), Structure(1, Kind.channel, 0), Structure(2, Kind.channel, 95)]
    one_by_one, at_once = PruningState.dense(geometry), PruningState.dense(geometry)
    for structure in removals:
        one_by_one.remove(structure)
    at_once.remove_all(removals)
    assert at_once.layers == one_by_one.layers
    assert at_once.layers[0].kv_heads == [1] and at_once.layers[2].kv_heads == [0, 1]

"""Engine changes made for the quality benchmark: one-pass activation statistics, and the pruning options
the defaults search measures, each validated and each reducing to the old behaviour at its neutral value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from core.data.calibration import MultipleChoiceCalibrationItem
from core.engine.architectures import family_of, geometry_of, to_gisp_model
from core.engine.masking import MASKED
from core.engine.materialize import pruned_model
from core.engine.methods.fisher import GateFisher, _residual_map, refit_residual_maps
from core.engine.methods.gradients import (
    accumulate_gradients,
    calibration_loss,
    prepare_for_gate_gradients,
    prepare_for_gradients,
)
from core.engine.methods.taylor import taylor_scores
from core.engine.objectives import CalibrationPool, batch_loss, collate
from core.engine.pruner import prune as engine_prune
from core.engine.slicing import slice_model
from core.engine.statistics import ActivationStatistics, output_projections
from core.engine.structures import Kind, PruningState, Structure
from core.pruning_spec import Method, Normalization, Objective, fit_to_layout
from tests.engine.conftest import BATCH, CORPUS, ITEMS, build_loaded, prune, settings


def test_activation_statistics_report_the_calibration_loss_of_the_same_pass() -> None:
    loaded = build_loaded()
    model = to_gisp_model(loaded.model)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    stats = ActivationStatistics(model).collect(model, batches)
    expected = calibration_loss(model, batches)
    assert torch.isclose(torch.tensor(stats.loss), torch.tensor(expected), rtol=1e-6)


def test_the_fisher_score_is_refused_for_methods_without_gradients() -> None:
    with pytest.raises(ValidationError, match="score applies to the gradient methods"):
        settings(method=Method.wanda_sp, score="fisher")
    assert settings(method=Method.gisp_oneshot, score="fisher").score.value == "fisher"


def test_bias_compensation_is_refused_for_methods_that_cannot_use_it() -> None:
    for method, hint in ((Method.wanda_sp, "not wanda-sp"), (Method.flap, "FLAP always compensates")):
        with pytest.raises(ValidationError, match=hint):
            settings(method=method, bias_compensation=True)
    assert settings(method=Method.gisp_oneshot, bias_compensation=True).bias_compensation


@pytest.mark.parametrize("method", [Method.gisp, Method.gisp_oneshot])
def test_compensated_trajectory_rebuilds_the_model_each_step_was_scored_on(method: Method) -> None:
    """The loss a step records is the calibration loss of ``pruned_model`` at the previous step's state."""
    loaded = build_loaded("llama")
    run_settings = settings(method=method, bias_compensation=True, sparsities=[0.2, 0.4])
    trajectory = prune(loaded, ITEMS, run_settings)
    pool = CalibrationPool(ITEMS, loaded.tokenizer, run_settings, BATCH)
    for index in range(1, len(trajectory.steps)):
        model = pruned_model(loaded, trajectory, trajectory.state_after_steps(index))
        batches = pool.batches(index if method is Method.gisp else 0)
        assert calibration_loss(model, batches) == pytest.approx(trajectory.steps[index].loss, rel=1e-5)
    last = pruned_model(loaded, trajectory, trajectory.state_after_steps(len(trajectory.steps)))
    biases = [layer.mlp.down_proj.bias for layer in last.model.layers]
    assert any(b is not None and b.abs().sum() > 0 for b in biases)


def test_compensation_changes_the_run_and_resumes_exactly() -> None:
    loaded = build_loaded("llama")
    run_settings = settings(bias_compensation=True, sparsities=[0.1, 0.2, 0.4])
    plain = prune(loaded, ITEMS, settings(sparsities=[0.1, 0.2, 0.4], bias_compensation=False))
    full = prune(loaded, ITEMS, run_settings)
    assert plain.compensation is None and full.compensation is not None
    assert [s.loss for s in full.steps][1:] != [s.loss for s in plain.steps][1:]

    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    partial = prune(loaded, ITEMS, run_settings, should_stop=stop_after_two)
    resumed = prune(loaded, ITEMS, run_settings, resume=type(partial).from_json(partial.to_json()))
    assert [(s.removed, s.loss) for s in resumed.steps] == [(s.removed, s.loss) for s in full.steps]
    assert resumed.compensation == full.compensation


def test_compensated_masking_run_matches_slicing_run() -> None:
    loaded = build_loaded("llama")
    sliced = prune(loaded, ITEMS, settings(bias_compensation=True))
    masked = prune(loaded, ITEMS, settings(bias_compensation=True), view=MASKED)
    assert [s.removed for s in masked.steps] == [s.removed for s in sliced.steps]
    assert [s.loss for s in masked.steps] == pytest.approx([s.loss for s in sliced.steps], rel=1e-5)


def test_compensation_leaves_the_base_model_untouched() -> None:
    loaded = build_loaded("llama")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    prune(loaded, ITEMS, settings(bias_compensation=True))
    after = loaded.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_activation_statistics_accept_a_layer_without_heads() -> None:
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    dense = PruningState.dense(geometry_of(loaded.model.config))
    headless = dense.copy()
    for head in list(headless.layers[1].heads):
        headless.remove(Structure(1, Kind.head, head))
    slice_model(model, dense, headless)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    stats = ActivationStatistics(model)
    accumulate_gradients(model, batches, stats)
    assert stats.mean("1.attn").numel() == 0
    assert stats.mean("1.mlp").numel() == len(headless.layers[1].channels)


def test_centred_scores_measure_each_feature_by_its_deviation_from_the_mean() -> None:
    """Under compensation the output side of a score uses Σ_t δ_t (a_t - ā), from per-token hooks here."""
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    prepare_for_gradients(model)
    linears = [lin for layer in model.model.layers for lin in (layer.self_attn.o_proj, layer.mlp.down_proj)]
    inputs: dict[int, list[torch.Tensor]] = {id(lin): [] for lin in linears}
    deltas: dict[int, list[torch.Tensor]] = {id(lin): [] for lin in linears}
    for linear in linears:
        linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features))
        linear.register_forward_hook(lambda m, a, out: inputs[id(m)].append(a[0].detach().flatten(0, -2)))
        linear.register_full_backward_hook(
            lambda m, gi, go: deltas[id(m)].append(go[0].detach().flatten(0, -2))
        )
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    stats = ActivationStatistics(model)
    accumulate_gradients(model, batches, stats)
    geometry = geometry_of(loaded.model.config)
    means = {key: stats.mean(key) for key in stats.sums}
    centred = taylor_scores(model, geometry, settings().experimental.normalization, means)
    plain = taylor_scores(model, geometry, settings().experimental.normalization)

    for linear in linears:  # replace ḡ by the per-token centred sum, then score without means
        a = torch.cat(inputs[id(linear)])
        delta = torch.cat(deltas[id(linear)])
        linear.weight.grad = delta.T @ (a - a.mean(0))
    expected = taylor_scores(model, geometry, settings().experimental.normalization)
    for got, want in zip(centred, expected):
        torch.testing.assert_close(got.heads, want.heads, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got.channels, want.channels, rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(got.channels, old.channels) for got, old in zip(centred, plain))


def test_one_shot_steps_record_the_loss_of_a_bounded_share_of_a_large_pool() -> None:
    from core.engine.pruner import ONE_SHOT_LOSS_SEQUENCES

    loaded = build_loaded("llama")
    run_settings = settings(method=Method.wanda_sp_dense, samples=ONE_SHOT_LOSS_SEQUENCES + 16)
    trajectory = engine_prune(loaded, ITEMS, run_settings, batch_size=8)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, run_settings, 8).batches(0)
    share = batches[: ONE_SHOT_LOSS_SEQUENCES // 8]
    assert len(share) < len(batches)
    scale = len(batches) / len(share)  # equal weights: the share's loss, put on the whole pool's scale
    dense_loss = calibration_loss(loaded.model, batches)
    assert trajectory.steps[0].loss == pytest.approx(dense_loss, rel=0.2)
    for index, step in enumerate(trajectory.steps):
        model = pruned_model(loaded, trajectory, trajectory.state_after_steps(index))
        assert calibration_loss(model, share) * scale == pytest.approx(step.loss, rel=1e-5)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_uniform_runs_of_families_without_output_biases_drop_default_compensation(
    family: str, tmp_path: Path
) -> None:
    """Without the refit, a uniform checkpoint of these families could not carry compensation biases."""
    from core.engine.materialize import materialize
    from core.errors import UserInputError
    from core.pruning_spec import Layout

    loaded = build_loaded(family)
    config = loaded.model.config
    no_refit = settings(reconstruction=False)
    assert fit_to_layout(no_refit, family_of(config), Layout.nonuniform).bias_compensation is True
    fitted = fit_to_layout(no_refit, family_of(config), Layout.uniform)
    assert fitted.bias_compensation is False
    with pytest.raises(UserInputError, match="no output biases") as refused:
        fit_to_layout(
            settings(bias_compensation=True, reconstruction=False), family_of(config), Layout.uniform
        )
    assert refused.value.field == "bias_compensation"

    compensated = prune(loaded, ITEMS, no_refit)  # compensated, materialised uniform: refused clearly
    with pytest.raises(UserInputError, match="nonuniform layout"):
        materialize(loaded, compensated, 0.4, tmp_path / "refused", layout=Layout.uniform)
    plain = prune(loaded, ITEMS, fitted)
    out = materialize(loaded, plain, 0.4, tmp_path / "uniform", layout=Layout.uniform)
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_refitted_uniform_checkpoints_of_families_without_output_biases_keep_compensated_scoring(
    family: str, tmp_path: Path
) -> None:
    """The refit fits weights alone there, so the run keeps its (default) compensated scores."""
    from transformers import AutoModelForCausalLM

    from core.engine.materialize import (
        checkpoint_model,
        materialize,
        stock_uniform_state,
    )
    from core.pruning_spec import Layout

    loaded = build_loaded(family)
    run_settings = fit_to_layout(settings(), family_of(loaded.model.config), Layout.uniform)
    assert run_settings.bias_compensation is True and run_settings.reconstruction is True
    trajectory = prune(loaded, ITEMS, run_settings)
    out = materialize(loaded, trajectory, 0.4, tmp_path / "uniform", layout=Layout.uniform, calibration=ITEMS)
    stock = AutoModelForCausalLM.from_pretrained(out).eval()
    assert all(layer.mlp.down_proj.bias is None for layer in stock.model.layers)
    expected = checkpoint_model(
        loaded, trajectory, stock_uniform_state(loaded, trajectory, 0.4), ITEMS, output_biases=False
    )
    ids = torch.randint(3, 300, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(stock(ids).logits, expected(ids).logits, atol=1e-5, rtol=0)


def _explicit_gates(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A gate of ones scaling every output projection's input features, for autograd to differentiate."""
    gates = {}
    for index, layer in enumerate(model.model.layers):
        for key, projection in (
            (f"{index}.attn", layer.self_attn.o_proj),
            (f"{index}.mlp", layer.mlp.down_proj),
        ):
            gates[key] = torch.ones(projection.in_features, requires_grad=True)
            projection.register_forward_pre_hook(lambda m, a, gate=gates[key]: (a[0] * gate,))
    return gates


def test_gate_fisher_records_each_sequence_gate_gradient_as_autograd_computes_it() -> None:
    """Σ_t x·∂L/∂x per sequence equals ∂L_s/∂m of an explicit gate m on each output-projection input feature."""
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    prepare_for_gradients(model)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    fisher = GateFisher(model)
    accumulate_gradients(model, batches)
    fisher.close()

    gates = _explicit_gates(model)
    for number, batch in enumerate(batches):
        for row in range(batch.input_ids.shape[0]):  # one sequence at a time: its own gate gradient
            single = type(batch)(
                *(
                    t[row : row + 1]
                    for t in (batch.input_ids, batch.attention_mask, batch.labels, batch.weights)
                )
            )
            for gate in gates.values():
                gate.grad = None
            batch_loss(model, single).backward()
            for key, gate in gates.items():
                recorded = fisher.products[key][number][row]
                torch.testing.assert_close(recorded, gate.grad, rtol=1e-4, atol=1e-8)


def test_margin_fisher_squares_each_item_margin_gradient_not_each_choice() -> None:
    """Under the margin objective an item is one loss (correct choice minus the wrong ones): its choices'
    gate gradients add up before squaring, as autograd gives for the item's margin; choices squared alone
    (what a per-sequence Fisher would do) rank differently."""
    words = " ".join(CORPUS[:4]).split()
    items = [
        MultipleChoiceCalibrationItem(
            prompt=" ".join(words[i : i + 5]),
            choices=[f" {w}" for w in words[i + 5 : i + 5 + k]],
            label=i % k,
        )
        for i, k in zip(range(0, 24, 4), (2, 3, 4, 2, 3, 4), strict=True)
    ]
    margin = settings(objective=Objective.margin, samples=len(items), score="fisher")
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    prepare_for_gate_gradients(model)
    g = geometry_of(loaded.model.config)
    pool = CalibrationPool(items, loaded.tokenizer, margin, BATCH)
    batches = pool.batches(0)
    batches_of_item = [
        {n for n, b in enumerate(batches) if item in b.groups.tolist()} for item in range(len(items))
    ]
    assert any(len(found) > 1 for found in batches_of_item)  # an item's choices meet across micro-batches
    fisher = GateFisher(model)
    accumulate_gradients(model, batches)
    fisher.close()
    groups = torch.cat([b.groups for b in batches])
    grouped = fisher.scores(model, g, Normalization.params, groups=groups)
    per_choice = fisher.scores(model, g, Normalization.params)

    gates = _explicit_gates(model)
    sequences = pool.sequences(0)
    item_gradients: dict[str, list[torch.Tensor]] = {key: [] for key in gates}
    for item in range(len(items)):  # the margin of one item, differentiated by autograd
        for gate in gates.values():
            gate.grad = None
        for batch in collate([s for s in sequences if s.group == item], 8, pool.pad_id):
            batch_loss(model, batch).backward()
        for key, gate in gates.items():
            item_gradients[key].append(gate.grad.clone())
    reference = GateFisher(model).close()
    reference.products = {key: [torch.stack(values)] for key, values in item_gradients.items()}
    expected = reference.scores(model, g, Normalization.params)
    for got, want in zip(grouped, expected, strict=True):
        torch.testing.assert_close(got.heads, want.heads, rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(got.channels, want.channels, rtol=1e-4, atol=1e-12)
    assert not torch.allclose(
        torch.cat([s.channels for s in per_choice]), torch.cat([s.channels for s in grouped])
    )


def test_text_windows_are_each_their_own_item_so_grouping_changes_nothing() -> None:
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    prepare_for_gate_gradients(model)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(score="fisher"), BATCH).batches(0)
    fisher = GateFisher(model)
    accumulate_gradients(model, batches)
    fisher.close()
    g = geometry_of(loaded.model.config)
    groups = torch.cat([b.groups for b in batches])
    assert sorted(groups.tolist()) == list(range(4))
    for a, b in zip(
        fisher.scores(model, g, Normalization.params, groups=groups),
        fisher.scores(model, g, Normalization.params),
        strict=True,
    ):
        assert torch.equal(a.heads, b.heads) and torch.equal(a.channels, b.channels)


def test_fisher_scores_remove_structures_that_cannot_change_the_output_first() -> None:
    loaded = build_loaded("llama", layers=4)
    with torch.no_grad():  # layer 1's head 2 and channel 7 write nothing: zero output columns
        layer = loaded.model.model.layers[1]
        head_dim = loaded.model.config.head_dim
        layer.self_attn.o_proj.weight[:, 2 * head_dim : 3 * head_dim] = 0
        layer.mlp.down_proj.weight[:, 7] = 0
    trajectory = prune(loaded, ITEMS, settings(score="fisher", sparsities=[0.1], steps=1))
    first = trajectory.steps[0].removed_structures
    assert Structure(1, Kind.head, 2) in first and Structure(1, Kind.channel, 7) in first
    taylor = prune(build_loaded("llama", layers=4), ITEMS, settings(sparsities=[0.1], steps=1))
    assert taylor.removal_sequence != trajectory.removal_sequence


def test_residual_map_gives_the_least_squares_residual_of_each_block_on_all_other_features() -> None:
    generator = torch.Generator().manual_seed(0)
    x = (
        torch.randn(400, 12, generator=generator, dtype=torch.float64)
        @ torch.randn(12, 12, generator=generator, dtype=torch.float64)
        + 0.5
    )
    a = torch.cat([x, torch.ones(400, 1, dtype=torch.float64)], dim=1)
    residual_map = _residual_map(a.T @ a, 12, 3, damping=0.0)
    residuals = a @ residual_map
    for block in range(4):
        own = list(range(3 * block, 3 * block + 3))
        others = [c for c in range(13) if c not in own]
        fit = torch.linalg.lstsq(a[:, others], a[:, own]).solution
        torch.testing.assert_close(residuals[:, own], a[:, own] - a[:, others] @ fit, atol=1e-8, rtol=1e-6)


def test_refit_fisher_records_the_gate_gradient_of_each_sequence_on_the_regression_residual() -> None:
    """∂L_s/∂m for an input x - (1 - m)·r, r = a·Q: the loss change of removing what a refit cannot restore."""
    loaded = build_loaded("llama")
    model = to_gisp_model(loaded.model)
    prepare_for_gradients(model)
    g = geometry_of(loaded.model.config)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    maps = refit_residual_maps(model, batches, g, constant=True)
    fisher = GateFisher(model, maps)
    accumulate_gradients(model, batches)
    fisher.close()

    projections = dict(output_projections(model))
    gates = {key: torch.ones(p.in_features, requires_grad=True) for key, p in projections.items()}

    def gated(key: str):
        def hook(_module, inputs):
            x = inputs[0]
            residual = x.detach() @ maps[key][:-1] + maps[key][-1]
            return (x - (1 - gates[key]) * residual,)

        return hook

    for key, projection in projections.items():
        projection.register_forward_pre_hook(gated(key))
    for number, batch in enumerate(batches):
        for row in range(batch.input_ids.shape[0]):
            single = type(batch)(
                *(
                    t[row : row + 1]
                    for t in (batch.input_ids, batch.attention_mask, batch.labels, batch.weights)
                )
            )
            for gate in gates.values():
                gate.grad = None
            batch_loss(model, single).backward()
            for key, gate in gates.items():
                torch.testing.assert_close(fisher.products[key][number][row], gate.grad, rtol=1e-4, atol=1e-7)


def test_refit_fisher_scores_a_channel_the_others_duplicate_near_zero() -> None:
    """A channel whose input another channel repeats costs nothing once refitted; plain Fisher cannot see that."""
    loaded = build_loaded("llama")
    with torch.no_grad():
        mlp = loaded.model.model.layers[1].mlp
        mlp.gate_proj.weight[7] = mlp.gate_proj.weight[8]
        mlp.up_proj.weight[7] = mlp.up_proj.weight[8]
    model = to_gisp_model(loaded.model)
    prepare_for_gradients(model)
    g = geometry_of(loaded.model.config)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(samples=64, seq_len=32), 16).batches(0)
    scores = {}
    for name, maps in (
        ("fisher", None),
        ("refit", refit_residual_maps(model, batches, g, constant=False, damping=1e-4)),
    ):
        fisher = GateFisher(model, maps)
        accumulate_gradients(model, batches)
        scores[name] = fisher.close().scores(model, g, Normalization.params)[1].channels
    kept_by_refit = scores["refit"] / scores["fisher"]  # the share of each channel's cost a refit cannot undo
    assert kept_by_refit[7] < 0.05
    assert kept_by_refit[7] < 0.1 * kept_by_refit.median()
    assert scores["fisher"][7] > 0.05 * scores["fisher"].median()


def test_refit_fisher_prunes_resumes_and_masks_like_every_score() -> None:
    chosen = settings(score="refit-fisher")
    sliced = prune(build_loaded("llama"), ITEMS, chosen)
    masked = prune(build_loaded("llama"), ITEMS, chosen, view=MASKED)
    # the same structures each step (within a step, near-equal scores may swap order between the two layouts)
    assert [sorted(map(tuple, s.removed)) for s in sliced.steps] == [
        sorted(map(tuple, s.removed)) for s in masked.steps
    ]
    assert (
        sliced.removal_sequence
        != prune(build_loaded("llama"), ITEMS, settings(score="fisher")).removal_sequence
    )
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    partial = prune(build_loaded("llama"), ITEMS, chosen, should_stop=stop_after_two)
    resumed = prune(build_loaded("llama"), ITEMS, chosen, resume=type(partial).from_json(partial.to_json()))
    assert [(s.removed, s.loss) for s in resumed.steps] == [(s.removed, s.loss) for s in sliced.steps]


def test_gate_scores_need_no_weight_gradients_and_record_the_same_products() -> None:
    loaded = build_loaded("llama")
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings(), BATCH).batches(0)
    products = []
    for prepare in (prepare_for_gradients, prepare_for_gate_gradients):
        model = to_gisp_model(loaded.model, copy=True)
        prepare(model)
        fisher = GateFisher(model)
        accumulate_gradients(model, batches)
        products.append({key: torch.cat(values) for key, values in fisher.close().products.items()})
        weight_gradients = [p.grad for name, p in model.named_parameters() if name.endswith("weight")]
    assert all(gradient is None for gradient in weight_gradients)
    for key, expected in products[0].items():
        assert torch.equal(products[1][key], expected)  # the same arithmetic, bit for bit


def test_refit_fisher_measures_compensation_means_on_the_scored_pass_alone() -> None:
    """The residual maps' extra forward pass (padding included) must not leak into the compensation means:
    on the dense model, one step of each gate score records the same means, those of the real tokens."""
    items = [
        MultipleChoiceCalibrationItem(
            prompt=" ".join(CORPUS[: 1 + i % 3]), choices=[" fox", " a lazy dog"], label=i % 2
        )
        for i in range(6)
    ]
    runs = {
        score: prune(
            build_loaded("llama"),
            items,
            settings(objective=Objective.margin, score=score, steps=1, sparsities=[0.2]),
        )
        for score in ("fisher", "refit-fisher")
    }
    assert runs["fisher"].compensation == runs["refit-fisher"].compensation

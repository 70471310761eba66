"""The engine's reproductions of published methods remove exactly what the originals' code removes.

Each test runs the engine and a direct transcription of the original (``reference_methods``) on the same
tiny model and the same calibration tokens, and compares the removal sets step by step.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from core.engine.architectures import geometry_of
from core.engine.loading import LoadedModel
from core.engine.objectives import CalibrationPool
from core.engine.structures import PruningState, Structure
from core.pruning_spec import Method, PruneSettings
from tests.engine.conftest import BATCH, ITEMS, build_model, build_tokenizer, prune
from tests.engine.reference_methods import flap_removals, gisp_paper_removals, wanda_sp_removals

IDENTITY = {"id": "tiny", "ref": None, "source": "test"}


def _sparsity_of(model: torch.nn.Module, removed: set[tuple[int, int, int]]) -> float:
    """The engine's measure of a removal set, so it can be asked to stop exactly where the original did
    (rounded down to the 9 decimals a schedule keeps: the last structure of the set then still counts)."""
    state = PruningState.dense(geometry_of(model.config))
    state.remove_all(Structure.from_list(list(r)) for r in sorted(removed))
    return math.floor(state.sparsity() * 1e9) / 1e9


def _calibration(settings: PruneSettings) -> list[torch.Tensor]:
    return [b.input_ids for b in CalibrationPool(ITEMS, build_tokenizer(), settings, BATCH).batches(0)]


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_gisp_paper_removes_what_the_authors_code_removes(kv_heads: int) -> None:
    model = build_model(heads=4, kv_heads=kv_heads, layers=4).double()
    reference = copy.deepcopy(model)
    settings = PruneSettings(method=Method.gisp_paper, sparsities=[0.1], samples=4, seq_len=16, steps=5)
    tokenizer = build_tokenizer()
    batches = [b.input_ids for b in CalibrationPool(ITEMS, tokenizer, settings, BATCH).batches(0)]

    trajectory = prune(
        LoadedModel(model, tokenizer, {"id": "tiny", "ref": None, "source": "test"}), ITEMS, settings
    )
    expected = gisp_paper_removals(reference, batches, steps=5, ratio=settings.experimental.structure_ratio)

    engine = [{tuple(r) for r in step.removed} for step in trajectory.steps]
    assert [len(s) for s in engine] == [len(s) for s in expected]
    assert engine == expected
    assert any(
        kind == 0 for step in expected for _, kind, _ in step
    )  # heads are ranked too, not only channels
    assert trajectory.steps[-1].sparsity > 0.1


def test_gisp_paper_defaults_are_the_authors_run() -> None:
    settings = PruneSettings(method=Method.gisp_paper, sparsities=[0.3])
    assert (settings.steps, settings.samples, settings.seq_len) == (112, 2000, 256)
    assert settings.reconstruction is False and settings.bias_compensation is False and settings.score is None
    with pytest.raises(ValueError, match="score"):
        PruneSettings(method=Method.gisp_paper, sparsities=[0.3], score="fisher")
    with pytest.raises(ValueError, match="bias_compensation"):
        PruneSettings(method=Method.gisp_paper, sparsities=[0.3], bias_compensation=True)


def test_gisp_paper_refuses_a_target_its_schedule_cannot_reach() -> None:
    model = build_model(heads=4, kv_heads=2, layers=4)
    settings = PruneSettings(
        method=Method.gisp_paper,
        sparsities=[0.6],
        samples=4,
        seq_len=16,
        steps=3,
        experimental={"structure_ratio": 0.1},
    )
    with pytest.raises(Exception, match="structure_ratio"):
        prune(
            LoadedModel(model, build_tokenizer(), {"id": "tiny", "ref": None, "source": "test"}),
            ITEMS,
            settings,
        )
    assert torch.is_tensor(next(model.parameters()))


def test_flap_removes_and_compensates_what_the_official_code_does() -> None:
    model = build_model(heads=4, kv_heads=4, layers=4).double()
    reference = copy.deepcopy(model)
    probe = PruneSettings(method=Method.flap, sparsities=[0.2], samples=6, seq_len=16)
    expected, baselines = flap_removals(reference, _calibration(probe), ratio=0.4)
    heads = [r for r in expected if r[1] == 0]
    assert heads and len(heads) < len(expected)  # heads and channels compete in the one ranking
    assert {r[0] for r in expected} == {0, 1, 2, 3}  # every layer is pruned, the first and last too

    settings = probe.model_copy(update={"sparsities": [_sparsity_of(model, expected)]})
    trajectory = prune(LoadedModel(model, build_tokenizer(), IDENTITY), ITEMS, settings)
    engine = {tuple(r) for step in trajectory.steps for r in step.removed}
    assert engine == expected
    assert trajectory.compensation is not None
    for key, mean in baselines.items():
        assert torch.allclose(
            torch.tensor(trajectory.compensation[key], dtype=torch.float64), mean, atol=1e-6
        )


def test_wanda_sp_removes_what_the_official_code_does_layer_after_layer() -> None:
    model = build_model(heads=4, kv_heads=4, layers=4).double()
    reference, pristine = copy.deepcopy(model), copy.deepcopy(model)
    probe = PruneSettings(method=Method.wanda_sp, sparsities=[0.2], samples=6, seq_len=16)
    expected = wanda_sp_removals(reference, _calibration(probe), ratio=0.25)
    per_layer = [
        sum(1 for r in expected if r[0] == layer and r[1] == kind) for layer in range(4) for kind in (0, 1)
    ]
    assert per_layer == [1, 24] * 4  # int(0.25 · 4) heads and int(0.25 · 96) channels in every layer

    settings = probe.model_copy(update={"sparsities": [_sparsity_of(model, expected)]})
    trajectory = prune(LoadedModel(model, build_tokenizer(), IDENTITY), ITEMS, settings)
    engine = {tuple(r) for step in trajectory.steps for r in step.removed}
    assert engine == expected
    # statistics from the pruned model differ from the dense model's: the dense reading removes another set
    dense = prune(
        LoadedModel(pristine, build_tokenizer(), IDENTITY),
        ITEMS,
        settings.model_copy(update={"method": Method.wanda_sp_dense, "protected_layers": []}),
    )
    assert {tuple(r) for step in dense.steps for r in step.removed} != expected


def test_an_older_trajectory_still_names_the_method_it_ran() -> None:
    """Trajectories written before the official FLAP and Wanda-sp took their names read as the variants."""
    from core.engine.trajectory import Trajectory

    loaded = LoadedModel(build_model(), build_tokenizer(), IDENTITY)
    for old, new in (("flap", Method.flap_headsum), ("wanda-sp", Method.wanda_sp_dense)):
        trajectory = prune(loaded, ITEMS, PruneSettings(method=new, sparsities=[0.2], samples=4, seq_len=16))
        data = trajectory.to_dict()
        data["schema_version"] = 2
        data["settings"]["method"] = old
        read = Trajectory.from_dict(data)
        assert read.settings.method is new and read.schema_version == 3
        assert read.removal_sequence == trajectory.removal_sequence

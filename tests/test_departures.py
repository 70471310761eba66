"""What reports and model cards say of a gisp run's departures from gisp-paper, and where the figures come from."""

from __future__ import annotations

import json
from pathlib import Path

from core.departures import EFFECTS, MEASURED_IN, departures_from_paper
from core.pruning_spec import Method, PruneSettings

ROOT = Path(__file__).resolve().parents[1]


def names(settings: PruneSettings) -> list[str]:
    return [d.name for d in departures_from_paper(settings)]


def test_the_default_gisp_run_lists_every_departure() -> None:
    assert names(PruneSettings(sparsities=[0.5])) == [
        "normalization",
        "gqa_heads",
        "bias_compensation",
        "reconstruction",
        "calibration",
        "steps",
        "schedule",
    ]


def test_settings_taken_back_to_the_papers_are_not_listed() -> None:
    settings = PruneSettings(
        sparsities=[0.5],
        bias_compensation=False,
        reconstruction=False,
        steps=112,
        experimental={"normalization": "reference"},
    )
    assert names(settings) == ["gqa_heads", "calibration", "schedule"]


def test_other_methods_list_none() -> None:
    for method in (Method.gisp_paper, Method.wanda_sp, Method.flap):
        assert departures_from_paper(PruneSettings(method=method, sparsities=[0.5])) == []


def test_each_measured_effect_is_the_benchmarks_own_figure() -> None:
    ratios = json.loads((ROOT / MEASURED_IN).read_text())["ratios"]
    assert EFFECTS, "no departure carries a measured effect"
    for name, effect in EFFECTS.items():
        for sparsity, intervals in effect.figures.items():
            for corpus, interval in zip(("wikitext2-test", "c4"), intervals):
                figure = ratios[effect.ratio_name][sparsity][corpus]
                rounded = (round(figure["ratio"], 3), round(figure["low"], 3), round(figure["high"], 3))
                assert rounded == (interval.ratio, interval.low, interval.high), (name, sparsity, corpus)
    listed = {d.name: d.measured for d in departures_from_paper(PruneSettings(sparsities=[0.5]))}
    for name, effect in EFFECTS.items():
        assert listed[name] == str(effect)

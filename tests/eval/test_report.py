"""evaluate_model -> build_report: deterministic numbers, intervals, fingerprints, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.data.paths import default_data_dir, sha256_file
from core.eval import build_report, comparable, evaluate_model, read_report, write_report
from core.eval.plots import plot_report
from core.eval.report import versus_dense
from core.eval.stats import paired_mean_difference
from tests.eval.conftest import SENTENCES, build_model

DATA = default_data_dir()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Real task files, and a short WikiText stand-in so the tiny tokenizer's perplexity pass is quick."""
    root = tmp_path_factory.mktemp("data")
    for task in ("piqa", "winogrande"):
        (root / task).symlink_to(DATA / task)
    (root / "wikitext-2-raw").mkdir()
    lines = [" = Robert Boulter = ", *(" " + s.replace("\n", " ") for s in SENTENCES)]
    (root / "wikitext-2-raw" / "wiki.test.raw").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def _evaluate(model, tokenizer, data_dir: Path) -> dict:
    return evaluate_model(
        model,
        tokenizer,
        tasks="piqa,winogrande",
        limit=4,
        perplexity_window=16,
        data_dir=data_dir,
        batch_size=3,
    )


@pytest.fixture(scope="module")
def report(model, tokenizer, data_dir: Path) -> dict:
    pruned = build_model(len(tokenizer), seed=1)
    return build_report(
        {0.5: _evaluate(pruned, tokenizer, data_dir), 0.0: _evaluate(model, tokenizer, data_dir)},
        model={"name": "tiny-llama"},
    )


def test_two_runs_give_identical_numbers(model, tokenizer, data_dir: Path, report: dict) -> None:
    again = build_report(
        {
            0.0: _evaluate(model, tokenizer, data_dir),
            0.5: _evaluate(build_model(len(tokenizer), seed=1), tokenizer, data_dir),
        },
        model={"name": "tiny-llama"},
    )
    assert comparable(again) == comparable(report)
    assert "timing" not in comparable(report)


def test_report_layout_and_intervals(report: dict, data_dir: Path) -> None:
    assert report["schema_version"] == "1.0"
    assert [entry["sparsity"] for entry in report["results"]] == [0.0, 0.5]
    assert report["dense"]["metrics"] == report["results"][0]["metrics"]
    assert set(report["versions"]) >= {"python", "torch", "transformers"}
    for entry in report["results"]:
        metrics = entry["metrics"]
        assert metrics["perplexity"]["window"] == 16
        assert metrics["perplexity"]["n_predicted_tokens"] > 0
        for task, result in metrics["multiple_choice"].items():
            assert result["n"] == 4
            assert result["acc_interval"][0] <= result["acc"] <= result["acc_interval"][1]
            assert result["interval_method"] == "wilson"
            assert len(result["items"]["chosen"]) == 4, task
        assert metrics["mean_accuracy"]["n"] == 8
    pruned = report["results"][1]
    dense = report["results"][0]["metrics"]
    assert pruned["vs_dense"]["perplexity_ratio"] == pytest.approx(
        pruned["metrics"]["perplexity"]["perplexity"] / dense["perplexity"]["perplexity"]
    )
    assert report["results"][0]["vs_dense"]["mean_accuracy.acc_delta"] == 0.0
    assert report["results"][0]["vs_dense"]["mean_accuracy.acc_delta_interval"] == [0.0, 0.0]
    assert report["dataset_fingerprints"]["piqa/valid.jsonl"] == sha256_file(DATA / "piqa" / "valid.jsonl")
    assert set(report["dataset_fingerprints"]) == {
        "piqa/valid.jsonl",
        "piqa/valid-labels.lst",
        "winogrande/dev.jsonl",
        "winogrande/dev-labels.lst",
        "wikitext-2-raw/wiki.test.raw",
    }
    assert report["settings"]["tasks"] == ["piqa", "winogrande"]


def test_accuracy_delta_carries_the_paired_interval_of_the_same_items(report: dict) -> None:
    pruned, dense = report["results"][1], report["results"][0]["metrics"]

    def correct(metrics: dict, chosen: str) -> dict[str, list[bool]]:
        return {
            task: [c == y for c, y in zip(r["items"][chosen], r["items"]["label"], strict=True)]
            for task, r in metrics["multiple_choice"].items()
        }

    for metric, chosen in (("acc", "chosen"), ("acc_norm", "chosen_norm")):
        delta = pruned["vs_dense"][f"mean_accuracy.{metric}_delta"]
        low, high = pruned["vs_dense"][f"mean_accuracy.{metric}_delta_interval"]
        expected = paired_mean_difference(correct(pruned["metrics"], chosen), correct(dense, chosen))
        assert delta == pytest.approx(expected[0])
        assert (low, high) == pytest.approx(expected[1:])
        assert low <= delta <= high


def test_no_paired_interval_when_the_items_differ(report: dict) -> None:
    pruned, dense = report["results"][1]["metrics"], report["results"][0]["metrics"]
    other = json.loads(json.dumps(dense))
    other["multiple_choice"]["piqa"]["items"]["ids"][0] = "another-item"
    assert "mean_accuracy.acc_delta_interval" not in versus_dense(pruned, other)
    assert "mean_accuracy.acc_delta" in versus_dense(pruned, other)


def test_mixed_protocols_are_refused(model, tokenizer, data_dir: Path) -> None:
    a = _evaluate(model, tokenizer, data_dir)
    b = dict(a, settings={**a["settings"], "limit": 5})
    with pytest.raises(ValueError):
        build_report({0.0: a, 0.5: b})


def test_write_read_roundtrip(report: dict, tmp_path: Path) -> None:
    path = write_report(report, tmp_path / "out" / "report.json")
    assert read_report(path) == json.loads(path.read_text())
    broken = tmp_path / "bad.json"
    broken.write_text(json.dumps({**report, "schema_version": "2.0"}))
    with pytest.raises(ValueError):
        read_report(broken)


def test_plots_are_pngs(report: dict, tmp_path: Path) -> None:
    written = plot_report(report, tmp_path)
    assert [p.name for p in written] == ["perplexity_vs_sparsity.png", "accuracy_vs_sparsity.png"]
    timed = {
        **report,
        "timing": {
            "0": {"efficiency": {"prefill_latency_ms": {"batch_1": 3.0}}},
            "0.5": {"efficiency": {"prefill_latency_ms": {"batch_1": 2.0}}},
        },
    }
    written = plot_report(timed, tmp_path)
    assert written[-1].name == "latency_vs_sparsity.png"
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""`gisp eval` end to end on a tiny saved Llama, and how `_load` decides on repository code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from core.cli import eval_command
from core.data.paths import default_data_dir
from core.errors import UserInputError
from core.eval import read_report
from tests.eval.conftest import SENTENCES, build_model

DATA = default_data_dir()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gisp")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "piqa").symlink_to(DATA / "piqa")
    (root / "wikitext-2-raw").mkdir()
    lines = [" = Robert Boulter = ", *(" " + s.replace("\n", " ") for s in SENTENCES)]
    (root / "wikitext-2-raw" / "wiki.test.raw").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> tuple[Path, Path]:
    """A plain HF directory (dense) and one marked as ours with a manifest (sparsity 0.5)."""
    root = tmp_path_factory.mktemp("models")
    dense, pruned = root / "dense", root / "pruned"
    build_model(len(tokenizer)).save_pretrained(dense)
    tokenizer.save_pretrained(dense)
    build_model(len(tokenizer), seed=3).save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    (pruned / "gisp_manifest.json").write_text(json.dumps({"sparsity": 0.5, "method": "gisp"}))
    return dense, pruned


def test_parser_defaults_and_handler() -> None:
    args = _parse(["eval", "some/dir"])
    assert args.handler is eval_command.run
    assert (args.tasks, args.limit, args.window, args.gsm8k, args.efficiency) == (
        "cmqa",
        None,
        "128",
        False,
        False,
    )
    args = _parse(
        [
            "eval",
            "d",
            "--tasks",
            "piqa,boolq",
            "--limit",
            "5",
            "--window",
            "full",
            "--gsm8k",
            "--gsm8k-limit",
            "3",
            "--efficiency",
            "--out",
            "r.json",
        ]
    )
    assert (args.limit, args.gsm8k_limit, args.out) == (5, 3, Path("r.json"))
    assert eval_command._window("full") is None
    with pytest.raises(UserInputError):
        eval_command._window("1")


def test_eval_writes_report_and_merges_baseline(checkpoints, data_dir: Path, tmp_path: Path, capsys) -> None:
    dense, pruned = checkpoints
    common = [
        "--tasks",
        "piqa",
        "--limit",
        "3",
        "--window",
        "16",
        "--data-dir",
        str(data_dir),
        "--threads",
        "1",
    ]
    dense_out = tmp_path / "dense.json"
    assert eval_command.run(_parse(["eval", str(dense), *common, "--out", str(dense_out)])) == 0
    out = tmp_path / "pruned.json"
    argv = [
        "eval",
        str(pruned),
        *common,
        "--baseline",
        str(dense_out),
        "--out",
        str(out),
        "--plots",
        str(tmp_path),
    ]
    assert eval_command.run(_parse(argv)) == 0
    report = read_report(out)
    assert [entry["sparsity"] for entry in report["results"]] == [0.0, 0.5]
    assert report["model"]["sparsity"] == 0.5
    assert report["results"][1]["metrics"]["multiple_choice"]["piqa"]["n"] == 3
    assert report["dense"]["metrics"] == read_report(dense_out)["results"][0]["metrics"]
    assert "perplexity_ratio" in report["results"][1]["vs_dense"]
    assert (tmp_path / "accuracy_vs_sparsity.png").is_file()
    assert "piqa acc" in capsys.readouterr().out
    assert report["timing"]["0.5"]["torch_threads"] == 1


def test_mismatched_baseline_is_a_user_error(checkpoints, data_dir: Path, tmp_path: Path) -> None:
    dense, pruned = checkpoints
    base = tmp_path / "base.json"
    eval_command.run(
        _parse(
            [
                "eval",
                str(dense),
                "--tasks",
                "piqa",
                "--limit",
                "2",
                "--no-perplexity",
                "--data-dir",
                str(data_dir),
                "--out",
                str(base),
            ]
        )
    )
    with pytest.raises(UserInputError):
        eval_command.run(
            _parse(
                [
                    "eval",
                    str(pruned),
                    "--tasks",
                    "piqa",
                    "--limit",
                    "3",
                    "--no-perplexity",
                    "--data-dir",
                    str(data_dir),
                    "--baseline",
                    str(base),
                ]
            )
        )


def test_load_trusts_repository_code_only_for_our_checkpoints(checkpoints, monkeypatch) -> None:
    import transformers

    seen: list[bool] = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code", False))
        return real(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    dense, pruned = checkpoints
    eval_command._load(dense)
    eval_command._load(pruned)
    assert seen == [False, True]


def test_missing_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError):
        eval_command.run(_parse(["eval", str(tmp_path / "nope")]))

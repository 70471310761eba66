"""`gisp eval` end to end on a tiny saved Llama, and how `_load` decides on repository code."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import eval_command
from core.data.paths import default_data_dir
from core.errors import UserInputError
from core.eval import read_report
from tests.eval.conftest import SENTENCES, build_model

DATA = default_data_dir()
ROOT = Path(__file__).resolve().parents[2]


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


def _hostile_code(marker: Path) -> str:
    """A modeling file that, if it were ever imported, would leave ``marker`` behind."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"


@pytest.fixture
def gisp_checkpoint(tmp_path: Path, tokenizer) -> tuple[Path, Path]:
    """One of our nonuniform checkpoints (gisp_layers, auto_map, a manifest), its modeling files replaced
    by code that writes a marker: returns (folder, marker)."""
    from core.engine.architectures import to_gisp_model
    from core.engine.modeling.configuration_gisp import GispConfig
    from core.engine.modeling.modeling_gisp import GispForCausalLM

    folder, marker = tmp_path / "checkpoint", tmp_path / "marker"
    GispConfig.register_for_auto_class()
    GispForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    to_gisp_model(build_model(len(tokenizer)), copy=True).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "gisp_manifest.json").write_text(json.dumps({"sparsity": 0.0, "method": "gisp"}))
    assert json.loads((folder / "config.json").read_text())["auto_map"]
    for name in ("modeling_gisp.py", "configuration_gisp.py"):
        (folder / name).write_text(_hostile_code(marker))
    return folder, marker


def test_our_checkpoints_load_our_class_never_the_code_beside_them(gisp_checkpoint, tokenizer) -> None:
    import torch

    from core.engine.modeling.modeling_gisp import GispForCausalLM

    folder, marker = gisp_checkpoint
    # First as `gisp eval` meets it: a fresh interpreter, where nothing has registered our class yet.
    probe = (
        "import sys; from core.cli.eval_command import _load; model, _ = _load(sys.argv[1]); "
        "print(type(model).__module__, type(model).__name__)"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert not marker.exists(), "the checkpoint's own modeling file was executed"
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == ["core.engine.modeling.modeling_gisp", "GispForCausalLM"]
    model, _ = eval_command._load(folder)
    assert type(model) is GispForCausalLM  # the engine's class, not one imported from the folder
    reference = build_model(len(tokenizer)).eval()
    ids = torch.tensor([tokenizer("The sun is responsible")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_a_manifest_does_not_buy_remote_code(tmp_path: Path, tokenizer) -> None:
    """Anyone can write gisp_manifest.json; a folder that needs its own code is refused, its code never run."""
    folder, marker = tmp_path / "hostile", tmp_path / "marker"
    build_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {
        "model_type": "hostile",
        "auto_map": {"AutoConfig": "hostile.HostileConfig", "AutoModelForCausalLM": "hostile.HostileModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "hostile.py").write_text(_hostile_code(marker))
    (folder / "gisp_manifest.json").write_text(json.dumps({"sparsity": 0.5, "method": "gisp"}))
    with pytest.raises(UserInputError, match="its own model code"):
        eval_command._load(folder)
    assert not marker.exists()


def test_tokenizer_code_is_refused_too(checkpoints, tmp_path: Path) -> None:
    import shutil

    dense, _ = checkpoints
    folder = tmp_path / "tokenizer-code"
    shutil.copytree(dense, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["hostile.HostileTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(UserInputError, match="tokenizer code"):
        eval_command._load(folder)


def test_plain_directories_load_without_remote_code(checkpoints, monkeypatch) -> None:
    import transformers

    seen: list[bool] = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code", False))
        return real(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    dense, pruned = checkpoints  # pruned: a plain Llama folder that carries a manifest
    eval_command._load(dense)
    eval_command._load(pruned)
    assert seen == [False, False]


def test_missing_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError):
        eval_command.run(_parse(["eval", str(tmp_path / "nope")]))

"""`gisp prune`, `gisp materialize` and `gisp models import` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from core.cli.main import main
from tests.engine.conftest import CORPUS, build_loaded


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    loaded = build_loaded("llama")
    path = tmp_path / "tiny"
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text("\n".join(CORPUS))
    return path


def test_prune_writes_trajectory_and_one_checkpoint_per_target(
    model_dir: Path, text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            str(model_dir),
            "--calibration",
            str(text_file),
            "--sparsities",
            "0.2,0.4",
            "--steps",
            "3",
            "--samples",
            "4",
            "--seq-len",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert len(trajectory["steps"]) == len(trajectory["schedule"]) >= 3
    for target in ("0.2", "0.4"):
        manifest = json.loads((out / f"sparsity-{target}" / "gisp_manifest.json").read_text())
        assert manifest["sparsity"] >= float(target)
        AutoModelForCausalLM.from_pretrained(out / f"sparsity-{target}", trust_remote_code=True)
    assert "sparsity-0.4" in capsys.readouterr().out

    materialize = [
        "materialize",
        str(out),
        "--sparsity",
        "0.3",
        "--out",
        str(tmp_path / "mid"),
        "--layout",
        "uniform",
    ]
    assert main(materialize) == 2  # the refit needs the run's calibration data
    assert "calibration" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("Some other text entirely, which this run never saw. " * 40)
    assert main([*materialize, "--calibration", str(other)]) == 2
    assert "differs from the data this trajectory was pruned on" in capsys.readouterr().err
    code = main([*materialize, "--calibration", str(text_file)])
    assert code == 0
    manifest = json.loads((tmp_path / "mid" / "gisp_manifest.json").read_text())
    assert manifest["layout"] == "uniform" and manifest["sparsity"] >= 0.3


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--sparsities", "0.2,1.5"], "--sparsities"),
        (["--sparsities", "0.2,0.2"], "--sparsities"),
        (["--sparsities", "a,b"], "--sparsities"),
        (["--sparsities", "0.2", "--steps", "0"], "--steps"),
        (["--sparsities", "0.2", "--method", "wanda-sp", "--bias-compensation"], "--bias-compensation"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    model_dir: Path,
    text_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    field: str,
) -> None:
    code = main(
        ["prune", str(model_dir), "--calibration", str(text_file), "--out", str(tmp_path / "x"), *flags]
    )
    assert code == 2
    assert field in capsys.readouterr().err


def test_missing_calibration_file_is_a_clear_error(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "prune",
            str(model_dir),
            "--calibration",
            str(tmp_path / "nope.txt"),
            "--sparsities",
            "0.2",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "calibration" in capsys.readouterr().err


def test_models_import_writes_safetensors(model_dir: Path, tmp_path: Path) -> None:
    assert (
        main(["models", "import", str(model_dir), "--name", "copy", "--models-dir", str(tmp_path / "models")])
        == 0
    )
    names = {p.name for p in (tmp_path / "models" / "copy").iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert (
        main(["models", "import", str(model_dir), "--name", "copy", "--models-dir", str(tmp_path / "models")])
        == 2
    )


def test_bias_compensation_flag_overrides_the_method_default() -> None:
    from core.cli.engine_commands import settings_from_args
    from core.cli.main import build_parser

    def parsed(*flags: str):
        args = build_parser().parse_args(
            ["prune", "m", "--calibration", "c", "--out", "o", "--sparsities", "0.3", *flags]
        )
        return settings_from_args(args)

    assert parsed().bias_compensation is True
    assert parsed("--no-bias-compensation").bias_compensation is False
    assert parsed("--method", "flap").bias_compensation is False


def test_score_flag_reaches_the_settings() -> None:
    from core.cli.engine_commands import settings_from_args
    from core.cli.main import build_parser
    from core.pruning_spec import Score

    def parsed(*flags: str):
        args = build_parser().parse_args(
            ["prune", "m", "--calibration", "c", "--out", "o", "--sparsities", "0.3", *flags]
        )
        return settings_from_args(args)

    assert parsed().score is Score.taylor
    assert parsed("--score", "fisher").score is Score.fisher


def test_a_mistyped_local_path_is_one_line_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models/smolm2` beside a `models` folder is a path that does not exist, not a hub id to retry."""
    (tmp_path / "models" / "smollm2").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    code = main(["prune", "models/smolm2", "--calibration", "wikitext2", "--sparsities", "0.2", "--out", "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model at 'models/smolm2'" in err


def test_an_unexpected_failure_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"not a database")
    monkeypatch.setenv("GISP_DATABASE_URL", f"sqlite:///{empty}")
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        code = main(["keys", "create", "--tenant", "t"])
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err

"""The scripts in examples/ run as a user would run them, on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.tiny import CORPUS, save_tiny_model

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("example")
    model = save_tiny_model(root / "tiny")
    text = root / "calibration.txt"
    text.write_text("\n".join(CORPUS * 4))
    out = root / "run"
    done = _run(
        "examples/prune_from_python.py", str(model), "--calibration", str(text), "--sparsities", "0.2,0.4",
        "--steps", "3", "--samples", "4", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reached sparsity" in done.stdout
    return out


def test_prune_from_python_writes_what_gisp_prune_writes(pruned: Path) -> None:
    trajectory = json.loads((pruned / "trajectory.json").read_text())
    assert trajectory["steps"][-1]["sparsity"] >= 0.4
    report = json.loads((pruned / "report.json").read_text())
    assert report["targets"] == [0.2, 0.4]
    departures = {
        d["name"]: d for d in report["departures_from_paper"]
    }  # a gisp run says how it is not the paper's
    assert departures["steps"]["this_run"] == "3 steps" and departures["steps"]["paper"] == "112 steps"
    for target in ("0.2", "0.4"):
        manifest = json.loads((pruned / f"sparsity-{target}" / "gisp_manifest.json").read_text())
        assert manifest["sparsity"] >= float(target)


def test_load_checkpoint_generates_and_refuses_a_tampered_folder(pruned: Path) -> None:
    checkpoint = pruned / "sparsity-0.4"
    done = _run("examples/load_checkpoint.py", str(checkpoint), "The quick", "--tokens", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parameters" in done.stdout and "The quick" in done.stdout

    config = checkpoint / "config.json"
    config.write_text(config.read_text().replace('"hidden_act"', '"hidden_act_"'))
    refused = _run("examples/load_checkpoint.py", str(checkpoint))
    assert refused.returncode != 0 and "does not match the manifest" in refused.stderr

"""Loading a checkpoint never stops at transformers' "Do you wish to run the custom code? [y/N]" question.

The question is only asked when standard input is a terminal (it waits there, 15 s, then fails), so the loading
runs in a child process whose standard input is a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.engine.gguf_fixtures import pruned_tiny_checkpoint

QUESTION = "Do you wish to run the custom code"
ROOT = Path(__file__).resolve().parents[2]


def run_in_terminal(code: str) -> str:
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


def test_demo_loading_asks_nothing_in_a_terminal(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    output = run_in_terminal(
        "from pathlib import Path\n"
        "from core.cli.demo_command import load_checkpoint\n"
        f"tokenizer, model = load_checkpoint(Path({str(checkpoint)!r}))\n"
        "print('loaded', type(model).__name__, len(tokenizer('hello world')['input_ids']))\n"
    )
    assert QUESTION not in output
    assert "loaded GispForCausalLM" in output


def test_the_question_is_real_without_the_registration(tmp_path: Path) -> None:
    """The control: plain transformers in a terminal does ask for this folder (so the test above can fail)."""
    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    primary, secondary = pty.openpty()
    os.write(primary, b"n\n")  # answer the question, so the child does not wait for its timeout
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained({str(checkpoint)!r})",
            ],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert QUESTION in result.stdout + result.stderr

"""Loading a checkpoint never stops at transformers' "Do you wish to run the custom code? [y/N]" question.

The question is only asked when standard input is a terminal (it waits there, 15 s, then fails), so the loading
runs in a child process whose standard input is a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from core.families import flat_pruned_config
from tests.engine.gguf_fixtures import pruned_tiny_checkpoint

QUESTION = "Do you wish to run the custom code"
ROOT = Path(__file__).resolve().parents[2]


def run_in_terminal(code: str, *, answer: bytes = b"", must_succeed: bool = True) -> str:
    """Output of ``code`` run with a pseudo-terminal as standard input; ``answer`` is typed there first."""
    primary, secondary = pty.openpty()
    os.write(primary, answer)
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
    if must_succeed:
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


def test_plain_transformers_loads_the_tokenizer_without_asking(tmp_path: Path) -> None:
    """What a user types first: stock transformers, no engine import, standard input a terminal."""
    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    output = run_in_terminal(
        "from transformers import AutoTokenizer\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(checkpoint)!r})\n"
        "print('tokens', tokenizer('hello world')['input_ids'])\n"
    )
    assert QUESTION not in output
    assert "tokens [" in output


def test_the_question_is_real_for_a_config_naming_gisp(tmp_path: Path) -> None:
    """The control: the same folder with ``model_type: gisp`` (the older layout) is asked about, so the test
    above can fail."""
    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    config_path = checkpoint / "config.json"
    config_path.write_text(json.dumps(flat_pruned_config(json.loads(config_path.read_text()))))
    output = run_in_terminal(
        f"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained({str(checkpoint)!r})",
        answer=b"n\n",  # answer the question, so the child does not wait for its timeout
        must_succeed=False,
    )
    assert QUESTION in output


def test_the_stock_class_refuses_the_weights_without_the_model_code(tmp_path: Path) -> None:
    """The config names the pruned family, but the weights never load silently into the family's stock class:
    without ``trust_remote_code`` transformers builds that class at the largest layer's sizes and stops at
    the first layer whose shapes differ."""
    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    output = run_in_terminal(
        "from transformers import AutoModelForCausalLM\n"
        "try:\n"
        f"    AutoModelForCausalLM.from_pretrained({str(checkpoint)!r})\n"
        "except Exception as error:\n"
        "    print('refused', type(error).__name__, str(error)[:300])\n"
        "else:\n"
        "    print('loaded')\n"
    )
    assert QUESTION not in output
    assert "refused" in output and "size mismatch" in output.lower(), output[-1500:]


def test_the_family_config_accepts_the_file_and_the_engine_refuses_to_prune_it(tmp_path: Path) -> None:
    """Stock transformers reads config.json as the family's config (strict checks included, e.g. Llama's
    hidden_size % heads); the engine refuses the folder as a model to prune, before any loading."""
    from transformers import AutoConfig, LlamaConfig

    from core.engine.loading import load_model
    from core.errors import UnsupportedModelError

    checkpoint = tmp_path / "ckpt"
    pruned_tiny_checkpoint(checkpoint)
    stock = AutoConfig.from_pretrained(checkpoint)  # no remote code: the family's own class
    assert type(stock) is LlamaConfig
    assert stock.hidden_size % stock.num_attention_heads == 0
    with pytest.raises(UnsupportedModelError, match="already pruned"):
        load_model(checkpoint)

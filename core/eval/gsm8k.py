"""GSM8K exact match with greedy generation, scored like lm-eval-harness's ``gsm8k`` task.

Prompting:

* few-shot (default, ``shots=5`` as lm-eval's ``gsm8k``): the exemplars are the *first* ``shots``
  train items (lm-eval samples them with a seeded sampler; the usual 8-shot chain-of-thought
  exemplars are not available offline). Each is ``"Question: {q}\\nAnswer: {answer}"`` with the
  reference solution verbatim, calculator annotations and ``#### n`` line included, joined with
  ``"\\n\\n"`` before the test question ``"Question: {q}\\nAnswer:"``;
* zero-shot chain of thought (``shots=0, cot=True``): ``"Question: {q}\\nAnswer: Let's think step by
  step."``; answers then rarely carry ``####``, so read the flexible-extract number.

Generation is greedy, up to ``max_new_tokens``, cut at lm-eval's stop strings (``"Question:"``,
``"</s>"``, ``"<|im_end|>"``) and at EOS. Two answers are extracted as lm-eval's filters do:
``strict-match`` takes the first ``#### (-?[0-9.,]+)``; ``flexible-extract`` takes the last match of
``(-?[$0-9.,]{2,})|(-?[0-9]+)``. Both are compared with the reference after lm-eval's
``exact_match`` normalisation: delete ``,``, ``$``, everything up to ``#### `` and a final ``.``,
then lower-case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.items import AnswerItem
from core.data.tasks import load_task, split_files
from core.eval.runtime import deterministic, eval_mode, resolve_device
from core.eval.stats import INTERVAL_METHOD, wilson_interval

STOP_STRINGS = ("Question:", "</s>", "<|im_end|>")
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
INVALID = "[invalid]"
COT_TRIGGER = " Let's think step by step."


@dataclass(frozen=True)
class Gsm8kSettings:
    """Everything that fixes the GSM8K number."""

    limit: int | None = None
    shots: int = 5
    cot: bool = False
    max_new_tokens: int = 256
    batch_size: int = 8


@dataclass(frozen=True)
class Generation:
    """A decoded continuation (cut at the stop strings) and how many tokens the model produced."""

    text: str
    n_tokens: int


@dataclass(frozen=True)
class Gsm8kItemResult:
    id: str
    reference: str
    strict: str
    flexible: str
    strict_correct: bool
    flexible_correct: bool
    generation: str = field(repr=False)
    n_generated_tokens: int = 0


def extract_strict(text: str) -> str:
    """lm-eval ``strict-match``: the first ``#### number``, else ``[invalid]``."""
    match = STRICT.findall(text)
    return match[0].strip() if match else INVALID


def extract_flexible(text: str) -> str:
    """lm-eval ``flexible-extract``: the last number-looking span, else ``[invalid]``."""
    matches = FLEXIBLE.findall(text)
    if not matches:
        return INVALID
    groups = [group for group in matches[-1] if group]
    return groups[0].strip() if groups else INVALID


def normalise(text: str) -> str:
    """lm-eval ``exact_match`` with gsm8k's ``regexes_to_ignore`` and ``ignore_case``."""
    for pattern in IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def is_correct(extracted: str, reference: str) -> bool:
    return normalise(extracted) == normalise(reference)


def truncate_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """Cut a generation at the first stop string, as lm-eval's ``until`` does."""
    cut = len(text)
    for stop in stops:
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


def build_prompt(item: AnswerItem, exemplars: Sequence[AnswerItem], cot: bool = False) -> str:
    """Few-shot exemplars then the question, in lm-eval's gsm8k layout (see module docstring)."""
    shots = [f"{ex.prompt} {ex.answer}" for ex in exemplars]
    question = item.prompt + (COT_TRIGGER if cot and not exemplars else "")
    return "\n\n".join([*shots, question])


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> list[Generation]:
    """Greedy continuations of each prompt, left-padded in fixed batches, cut at the stop strings."""
    target = resolve_device(model, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    ends = {tokenizer.eos_token_id, pad_id} - {None}
    outputs: list[Generation] = []
    try:
        with eval_mode(model), deterministic():
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(target)
                generated = model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                    stop_strings=list(STOP_STRINGS),
                    tokenizer=tokenizer,
                )
                new_tokens = generated[:, encoded["input_ids"].size(1) :]
                for row in new_tokens.tolist():
                    count = next((i for i, token in enumerate(row) if token in ends), len(row))
                    text = truncate_at_stop(tokenizer.decode(row[:count], skip_special_tokens=True))
                    outputs.append(Generation(text, count))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def score_generations(
    items: Sequence[AnswerItem], generations: Sequence[Generation | str]
) -> list[Gsm8kItemResult]:
    """Both lm-eval extractions of each generation, compared with the reference."""
    results = []
    for item, generation in zip(items, generations, strict=True):
        text = generation.text if isinstance(generation, Generation) else generation
        n_tokens = generation.n_tokens if isinstance(generation, Generation) else 0
        strict, flexible = extract_strict(text), extract_flexible(text)
        results.append(
            Gsm8kItemResult(
                id=item.id,
                reference=item.final_answer,
                strict=strict,
                flexible=flexible,
                strict_correct=is_correct(strict, item.answer),
                flexible_correct=is_correct(flexible, item.answer),
                generation=text,
                n_generated_tokens=n_tokens,
            )
        )
    return results


def summarise(results: Sequence[Gsm8kItemResult], settings: Gsm8kSettings) -> dict[str, Any]:
    """Accuracy per filter with Wilson intervals, plus the compact per-item answers."""
    n = len(results)
    out: dict[str, Any] = {"n": n, "settings": asdict(settings), "interval_method": INTERVAL_METHOD}
    for name, attribute in (("strict_match", "strict_correct"), ("flexible_extract", "flexible_correct")):
        correct = sum(getattr(r, attribute) for r in results)
        out[name] = {
            "accuracy": correct / n if n else 0.0,
            "correct": correct,
            "n": n,
            "interval": list(wilson_interval(correct, n)),
        }
    out["mean_generated_tokens"] = sum(r.n_generated_tokens for r in results) / n if n else 0.0
    out["items"] = {
        "ids": [r.id for r in results],
        "strict": [r.strict for r in results],
        "flexible": [r.flexible for r in results],
        "reference": [r.reference for r in results],
    }
    return out


def evaluate_gsm8k(
    model: torch.nn.Module,
    tokenizer: Any,
    settings: Gsm8kSettings | None = None,
    *,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[dict[str, Any], list[Gsm8kItemResult]]:
    """GSM8K test exact match; returns the report entry and the per-item results (generations)."""
    settings = settings or Gsm8kSettings()
    items: list[AnswerItem] = load_task("gsm8k", "test", data_dir, limit=settings.limit)  # type: ignore[assignment]
    exemplars: list[AnswerItem] = (
        load_task("gsm8k", "train", data_dir, limit=settings.shots) if settings.shots else []  # type: ignore[assignment]
    )
    prompts = [build_prompt(item, exemplars, settings.cot) for item in items]
    generations = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        device=device,
    )
    results = score_generations(items, generations)
    return summarise(results, settings), results


def gsm8k_files(settings: Gsm8kSettings, data_dir: Path | None = None) -> list[Path]:
    """Data files GSM8K evaluation reads (test, and train when exemplars are used)."""
    files = split_files("gsm8k", "test", data_dir)
    return files + (split_files("gsm8k", "train", data_dir) if settings.shots else [])

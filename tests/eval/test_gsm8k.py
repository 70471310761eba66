"""GSM8K: lm-eval's answer extraction and normalisation, prompt layout, and the generation loop."""

from __future__ import annotations

from core.data.paths import default_data_dir
from core.data.tasks import load_task
from core.eval.gsm8k import (
    INVALID,
    Gsm8kSettings,
    build_prompt,
    evaluate_gsm8k,
    extract_flexible,
    extract_strict,
    is_correct,
    score_generations,
    summarise,
    truncate_at_stop,
)

DATA = default_data_dir()


def test_strict_and_flexible_extraction() -> None:
    assert extract_strict("so 9 * 2 = 18\n#### 18") == "18"
    assert extract_strict("#### -1,600.5 and later #### 3") == "-1,600.5"
    assert extract_strict("The answer is 18.") == INVALID
    assert extract_flexible("She makes 9 * 2 = $18 every day.") == "$18"
    assert extract_flexible("48/2 = 24 clips, 72 in total.") == "72"
    assert extract_flexible("no digits here") == INVALID
    assert extract_flexible("just 7") == "7"


def test_exact_match_normalisation_like_lm_eval() -> None:
    reference = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 1,600"
    assert is_correct("1,600", reference)
    assert is_correct("$1600.", reference)
    assert not is_correct("160", reference)
    assert not is_correct(INVALID, reference)


def test_truncation_at_stop_strings() -> None:
    assert truncate_at_stop(" 2 + 2 = 4\n#### 4\n\nQuestion: next") == " 2 + 2 = 4\n#### 4\n\n"
    assert truncate_at_stop("abc<|im_end|>def</s>") == "abc"
    assert truncate_at_stop("no stop") == "no stop"


def test_prompt_uses_first_train_items_as_exemplars() -> None:
    test_item = load_task("gsm8k", "test", DATA, limit=1)[0]
    exemplars = load_task("gsm8k", "train", DATA, limit=2)
    prompt = build_prompt(test_item, exemplars)
    assert prompt.startswith("Question: Natalia sold clips to 48 of her friends")
    assert "#### 72\n\nQuestion: Weng earns $12" in prompt
    assert prompt.endswith("\n\n" + test_item.prompt)
    assert prompt.count("Question:") == 3
    zero = build_prompt(test_item, [], cot=True)
    assert zero == test_item.prompt + " Let's think step by step."


def test_perfect_generations_score_full_marks() -> None:
    items = load_task("gsm8k", "test", DATA, limit=5)
    results = score_generations(items, [" " + item.answer for item in items])
    summary = summarise(results, Gsm8kSettings(limit=5))
    assert summary["strict_match"]["accuracy"] == 1.0
    assert summary["flexible_extract"]["accuracy"] == 1.0
    assert summary["strict_match"]["interval"][1] == 1.0
    wrong = score_generations(items, [" #### 123456789"] * 5)
    assert summarise(wrong, Gsm8kSettings())["strict_match"]["correct"] == 0


def test_greedy_generation_is_bounded_and_repeatable(model, tokenizer) -> None:
    settings = Gsm8kSettings(limit=3, shots=1, max_new_tokens=6, batch_size=2)
    summary, results = evaluate_gsm8k(model, tokenizer, settings, data_dir=DATA)
    again, results_again = evaluate_gsm8k(model, tokenizer, settings, data_dir=DATA)
    assert summary == again
    assert [r.generation for r in results] == [r.generation for r in results_again]
    assert summary["n"] == 3
    for result in results:
        assert 1 <= result.n_generated_tokens <= 6
        assert "Question:" not in result.generation
    assert tokenizer.padding_side == "right"  # restored after left-padded generation


def test_evaluate_model_wires_gsm8k_into_the_report(model, tokenizer) -> None:
    from core.eval import build_report, evaluate_model

    settings = Gsm8kSettings(limit=2, shots=0, cot=True, max_new_tokens=3)
    evaluation = evaluate_model(model, tokenizer, tasks=None, perplexity=False, gsm8k=settings, data_dir=DATA)
    assert evaluation["metrics"]["gsm8k"]["n"] == 2
    assert evaluation["settings"]["gsm8k"]["cot"] is True
    assert list(evaluation["dataset_fingerprints"]) == ["gsm8k/test.jsonl"]  # no exemplars, no train file
    report = build_report({0.0: evaluation, 0.25: evaluation})
    assert report["results"][1]["vs_dense"]["gsm8k.strict_match_delta"] == 0.0

"""The batched scorer against an independent, one-request-at-a-time re-implementation of lm-eval.

lm-eval-harness cannot run offline on these files as part of the suite, so the reference below
re-implements its documented method for causal models: move the context's trailing spaces to the
continuation, encode ``context + continuation`` and ``context`` separately (tokenizer defaults, so
BOS included), take the continuation tokens as the tail of the whole encoding, feed
``whole[:-1]`` unpadded and sum the log-softmax over the continuation positions.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.data.items import MultipleChoiceItem
from core.data.paths import default_data_dir
from core.data.tasks import CMQA_TASKS, load_task
from core.eval.loglikelihood import encode_pair, loglikelihoods
from core.eval.multiple_choice import (
    ItemPrediction,
    choice_length,
    evaluate_tasks,
    expand_tasks,
    mean_accuracy,
    score_items,
    summarise,
)
from core.eval.stats import wilson_interval
from tests.eval.conftest import build_model

DATA = default_data_dir()


def reference_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    if context == "":
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ctx = [tokenizer.bos_token_id]
    else:
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        context = stripped
        whole = tokenizer(context + continuation)["input_ids"]
        ctx = tokenizer(context)["input_ids"]
        cont = whole[len(ctx) :]
    sequence = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(sequence[:, :-1]).logits[0]
    logprobs = F.log_softmax(logits.double(), dim=-1)[-len(cont) :]
    return float(sum(logprobs[i, token] for i, token in enumerate(cont)))


def reference_choices(model, tokenizer, item: MultipleChoiceItem) -> tuple[list[float], int, int]:
    contexts = item.contexts or [item.prompt] * len(item.choices)
    lls = [
        reference_loglikelihood(model, tokenizer, c, x) for c, x in zip(contexts, item.choices, strict=True)
    ]
    lengths = [len(choice.removeprefix(" ")) for choice in item.choices]
    chosen = max(range(len(lls)), key=lambda i: (lls[i], -i))
    chosen_norm = max(range(len(lls)), key=lambda i: (lls[i] / lengths[i], -i))
    return lls, chosen, chosen_norm


@pytest.fixture(scope="module")
def real_items() -> list[MultipleChoiceItem]:
    """Two real items per task: the shortest prompts among the first 40, to keep the test fast."""
    items: list[MultipleChoiceItem] = []
    for task in CMQA_TASKS:
        pool = load_task(task, "eval", DATA, limit=40)
        items.extend(sorted(pool, key=lambda item: len(item.prompt))[:2])  # type: ignore[arg-type]
    return items


def synthetic_items() -> list[MultipleChoiceItem]:
    return [
        MultipleChoiceItem("Is the sun hot?\nAnswer: ", ["yes", "no"], 0, "synthetic", "trailing-space"),
        MultipleChoiceItem("", [" The sun", " A roof"], 1, "synthetic", "empty-context"),
        MultipleChoiceItem(
            "Question: why?\nAnswer:", [" a", " a bacterial population", " 1,600"], 1, "s", "x"
        ),
    ]


def test_batched_scorer_matches_reference_on_real_items(model, tokenizer, real_items) -> None:
    items = real_items + synthetic_items()
    predictions = score_items(model, tokenizer, items, batch_size=5)
    for item, prediction in zip(items, predictions, strict=True):
        lls, chosen, chosen_norm = reference_choices(model, tokenizer, item)
        assert prediction.logprobs == pytest.approx(lls, abs=1e-4)
        assert (prediction.chosen, prediction.chosen_norm) == (chosen, chosen_norm), item.id
    # the random model must not be so flat that agreement is trivial
    assert len({p.chosen for p in predictions}) > 1


def test_batch_size_changes_nothing_but_speed(model, tokenizer, real_items) -> None:
    one = score_items(model, tokenizer, real_items, batch_size=1)
    many = score_items(model, tokenizer, real_items, batch_size=32)
    assert [p.chosen for p in one] == [p.chosen for p in many]
    for a, b in zip(one, many, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert score_items(model, tokenizer, real_items, batch_size=32) == many  # repeatable


def test_leading_space_merge_is_kept(tokenizer) -> None:
    yes = tokenizer.convert_tokens_to_ids("Ġyes")
    ctx, cont = encode_pair(tokenizer, "Answer: ", "yes")
    assert cont == [yes]
    assert (ctx, cont) == encode_pair(tokenizer, "Answer:", " yes")
    assert ctx[0] == tokenizer.bos_token_id


def test_long_context_is_left_truncated(tokenizer) -> None:
    model = build_model(len(tokenizer), context=32)
    long_context = "Roof shingle removal: A man is sitting on a roof. " * 20
    (short,) = loglikelihoods(model, tokenizer, [(long_context, " He starts")], max_length=32)
    ctx, cont = encode_pair(tokenizer, long_context, " He starts")
    window = (ctx + cont)[-33:]
    with torch.no_grad():
        logits = model(torch.tensor([window[:-1]])).logits[0, -len(cont) :]
    expected = F.log_softmax(logits.double(), -1).gather(-1, torch.tensor(cont).unsqueeze(-1)).sum()
    assert math.isclose(short.logprob, float(expected), abs_tol=1e-4)


def test_winogrande_scores_per_option_contexts(model, tokenizer) -> None:
    items = load_task("winogrande", "eval", DATA, limit=4)
    predictions = score_items(model, tokenizer, items)  # type: ignore[arg-type]
    for item, prediction in zip(items, predictions, strict=True):
        assert prediction.chosen == prediction.chosen_norm  # shared continuation
        direct = [reference_loglikelihood(model, tokenizer, c, x) for c, x in item.requests]
        assert prediction.logprobs == pytest.approx(direct, abs=1e-4)


def test_acc_norm_divides_by_choice_characters_without_delimiter() -> None:
    assert choice_length(" yes") == 3
    assert choice_length("yes") == 3
    predictions = [
        ItemPrediction("a", 0, 0, 1, [-1.0, -2.0]),
        ItemPrediction("b", 1, 1, 1, [-3.0, -1.0]),
        ItemPrediction("c", 1, 0, 0, [-1.0, -3.0]),
        ItemPrediction("d", 0, 0, 0, [-1.0, -3.0]),
    ]
    result = summarise("t", predictions)
    assert (result.n, result.acc, result.acc_norm) == (4, 0.75, 0.5)
    assert result.acc_interval == wilson_interval(3, 4)
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)[0] == 0.0


def test_evaluate_tasks_limits_and_reports(model, tokenizer) -> None:
    assert expand_tasks("cmqa") == list(CMQA_TASKS)
    assert expand_tasks("piqa, arc_easy,piqa") == ["piqa", "arc_easy"]
    with pytest.raises(ValueError):
        expand_tasks("gsm8k")
    results = evaluate_tasks(model, tokenizer, "piqa,arc_easy", limit=3, data_dir=DATA)
    assert list(results) == ["piqa", "arc_easy"]
    assert all(r.n == 3 and len(r.predictions) == 3 for r in results.values())
    assert [p.id for p in results["arc_easy"].predictions] == [i.id for i in load_task("arc_easy", limit=3)]
    mean = mean_accuracy(results)
    assert mean["acc"] == pytest.approx((results["piqa"].acc + results["arc_easy"].acc) / 2)
    assert mean["n"] == 6
    assert mean["acc_interval"][0] <= mean["acc"] <= mean["acc_interval"][1]

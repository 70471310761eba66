"""Loaders for the seven commonsense multiple-choice tasks ("CMQA") and GSM8K, in lm-eval's form.

Prompts and continuations are built exactly as the lm-eval-harness task definitions build them
(zero-shot, target delimiter ``" "``), so accuracies are comparable with published tables:

========== ================================================ ===================================
task        context                                         continuations
========== ================================================ ===================================
boolq       ``{passage}\\nQuestion: {question}?\\nAnswer:``  ``" no"``, ``" yes"``
piqa        ``Question: {goal}\\nAnswer:``                   ``" " + sol1``, ``" " + sol2``
hellaswag   ``preprocess(label + ": " + ctx)``              ``" " + preprocess(ending)``
winogrande  ``sentence[:blank] + option`` (per option)       ``" " + sentence[blank+1:].strip()``
arc_*       ``Question: {question}\\nAnswer:``               ``" " + choice text``
openbookqa  ``{question_stem}``                             ``" " + choice text``
gsm8k       ``Question: {question}\\nAnswer:``               generated; the reference is the solution
========== ================================================ ===================================

Split policy: evaluation uses test where labels are public (arc_*, openbookqa, gsm8k) and validation
otherwise; calibration only ever uses train, so a model is never scored on what it was pruned with.

This module must not import torch: the API process uses it to validate requests.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from core.data import hub, local_files
from core.data.items import AnswerItem, MultipleChoiceItem
from core.data.paths import resolve_data_dir

CMQA_TASKS: tuple[str, ...] = (
    "boolq",
    "piqa",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "openbookqa",
)
ALL_TASKS: tuple[str, ...] = (*CMQA_TASKS, "gsm8k")
CMQA = "cmqa"

EVAL_SPLITS: dict[str, str] = {
    "boolq": "validation",
    "piqa": "validation",
    "hellaswag": "validation",
    "winogrande": "validation",
    "arc_easy": "test",
    "arc_challenge": "test",
    "openbookqa": "test",
    "gsm8k": "test",
}
CALIBRATION_SPLIT = "train"

Record = dict[str, Any]


# --------------------------------------------------------------------------- formatting (lm-eval)


def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's `hellaswag.utils.preprocess`: drops WikiHow bracket artefacts and double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


_LAST_FRAGMENT = re.compile(r"(\. )([a-z])(?=[^.]*$)")


def _capitalise_last_fragment(query: str) -> str:
    """Approximate lm-eval's ``ctx_b.capitalize()`` when only the joined ``ctx`` is on disk.

    In the offline copy ``ctx = ctx_a + " " + ctx_b`` with ``ctx_b`` left lower case; ``ctx_b`` is the
    unfinished sentence after the last ". ", so upper-casing its first letter restores lm-eval's query
    for the usual case (task 0: "... roof. he" -> "... roof. He"). ``capitalize`` also lower-cases the
    rest of ``ctx_b``; that cannot be recovered and is rarely visible.
    """
    return _LAST_FRAGMENT.sub(lambda m: m.group(1) + m.group(2).upper(), query, count=1)


def _choice_index(labels: list[str], key: str, where: str) -> int:
    """Gold index located in the record's own label list (ARC mixes letters and digits)."""
    key = key.strip()
    if key not in labels:
        raise ValueError(f"{where}: answerKey {key!r} not among labels {labels}")
    return labels.index(key)


def _boolq_label(value: Any) -> int:
    """The offline copy stores "true"/"false" strings; the Hub stores 0/1 (or booleans)."""
    if isinstance(value, str):
        mapping = {"true": 1, "false": 0, "1": 1, "0": 0}
        if value.strip().lower() not in mapping:
            raise ValueError(f"boolq: unknown label {value!r}")
        return mapping[value.strip().lower()]
    return int(value)


def format_record(task: str, record: Record, index: int) -> MultipleChoiceItem:
    """One record (Hub layout, or the offline conversion of it) -> lm-eval's request form."""
    if task == "boolq":
        return MultipleChoiceItem(
            prompt=f"{record['passage']}\nQuestion: {record['question']}?\nAnswer:",
            choices=[" no", " yes"],
            label=_boolq_label(record["label"]),
            task=task,
            id=str(record.get("idx", index)),
        )
    if task == "piqa":
        return MultipleChoiceItem(
            prompt=f"Question: {record['goal']}\nAnswer:",
            choices=[" " + record["sol1"], " " + record["sol2"]],
            label=int(record["label"]),
            task=task,
            id=str(record.get("idx", index)),
        )
    if task == "hellaswag":
        if "ctx_a" in record:  # Hub layout: exactly lm-eval's query
            ctx = record["ctx_a"] + " " + record["ctx_b"].capitalize()
            query = record["activity_label"] + ": " + ctx
        else:  # offline 6-line layout
            query = _capitalise_last_fragment(record["query_uncapitalised"])
        return MultipleChoiceItem(
            prompt=_hellaswag_preprocess(query),
            choices=[" " + _hellaswag_preprocess(ending) for ending in record["endings"]],
            label=int(record["label"]),
            task=task,
            id=str(record.get("ind", index)),
        )
    if task == "winogrande":
        sentence = record["sentence"]
        blank = sentence.index("_")
        prefix = sentence[:blank]
        continuation = " " + sentence[blank + 1 :].strip()
        options = [record["option1"], record["option2"]]
        return MultipleChoiceItem(
            prompt=prefix,
            choices=[continuation, continuation],
            contexts=[prefix + option for option in options],
            label={"1": 0, "2": 1}[str(record["answer"]).strip()],
            task=task,
            id=str(record.get("qID", index)),
        )
    if task in ("arc_easy", "arc_challenge"):
        labels = list(record["choices"]["label"])
        return MultipleChoiceItem(
            prompt=f"Question: {record['question']}\nAnswer:",
            choices=[" " + text for text in record["choices"]["text"]],
            label=_choice_index(labels, record["answerKey"], f"{task}/{record['id']}"),
            task=task,
            id=str(record["id"]),
        )
    if task == "openbookqa":
        labels = list(record["choices"]["label"])
        return MultipleChoiceItem(
            prompt=record["question_stem"],
            choices=[" " + text for text in record["choices"]["text"]],
            label=_choice_index(labels, record["answerKey"], f"{task}/{record['id']}"),
            task=task,
            id=str(record["id"]),
        )
    raise ValueError(f"unknown multiple-choice task {task!r}")


def format_gsm8k(record: Record, index: int) -> AnswerItem:
    """lm-eval's gsm8k prompt; the reference keeps the worked solution and its '#### n' line."""
    return AnswerItem(
        prompt=f"Question: {record['question']}\nAnswer:",
        answer=record["answer"],
        id=str(record.get("idx", index)),
        question=record["question"],
    )


# --------------------------------------------------------------------------- loading


def _check_task(name: str) -> None:
    if name not in ALL_TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(ALL_TASKS)}")


def resolve_split(name: str, split: str) -> str:
    """Accept the aliases "eval" (the task's evaluation split) and "calibration" (train)."""
    _check_task(name)
    if split == "eval":
        return EVAL_SPLITS[name]
    if split == "calibration":
        return CALIBRATION_SPLIT
    return split


def has_split(name: str, split: str, data_dir: Path | None = None) -> bool:
    """Whether (task, split) is on disk under `data_dir` (the Hub is not consulted)."""
    return local_files.has_local(name, resolve_split(name, split), resolve_data_dir(data_dir))


def split_files(name: str, split: str, data_dir: Path | None = None) -> list[Path]:
    """The offline files a (task, split) reads, for dataset fingerprints in reports."""
    split = resolve_split(name, split)
    return local_files.task_files(name, split, resolve_data_dir(data_dir))


def _records(name: str, split: str, data_dir: Path) -> list[Record]:
    if local_files.has_local(name, split, data_dir):
        return local_files.read_records(name, split, data_dir)
    if hub.datasets_available() and name in hub.HUB_SOURCES:
        return hub.hub_records(name, split)
    raise FileNotFoundError(
        f"{name}/{split}: no offline copy under {data_dir} and the `datasets` package is not installed"
    )


def load_task(
    name: str, split: str = "eval", data_dir: Path | None = None, limit: int | None = None
) -> list[MultipleChoiceItem] | list[AnswerItem]:
    """Items of one task split, in file order; `limit` keeps the first N (as lm-eval's --limit does).

    Multiple-choice tasks return :class:`MultipleChoiceItem`, ``gsm8k`` returns :class:`AnswerItem`.
    """
    split = resolve_split(name, split)
    records = _records(name, split, resolve_data_dir(data_dir))
    if limit is not None:
        records = records[: max(0, limit)]
    if name == "gsm8k":
        return [format_gsm8k(record, index) for index, record in enumerate(records)]
    return [format_record(name, record, index) for index, record in enumerate(records)]


# --------------------------------------------------------------------------- calibration


def calibration_tasks(data_dir: Path | None = None) -> list[str]:
    """The CMQA tasks with a train split on disk: the members of the "cmqa" calibration mix."""
    return [task for task in CMQA_TASKS if has_split(task, CALIBRATION_SPLIT, data_dir)]


def _gsm8k_calibration(item: AnswerItem) -> dict[str, Any]:
    return {"prompt": item.prompt, "answer": " " + item.answer, "task": item.task, "id": item.id}


def calibration_items(
    name: str, data_dir: Path | None = None, limit: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Seeded sample of train-split items for the calibration objectives; never an evaluation split.

    Multiple-choice tasks give ``{"prompt", "choices", "label", "task", "id"}`` dicts in which
    ``prompt + choices[i]`` is option i (WinoGrande folded as in
    :meth:`MultipleChoiceItem.as_prompt_choices`). ``"gsm8k"`` gives ``{"prompt", "answer", ...}``
    dicts (answer objective). ``"cmqa"`` interleaves a seeded shuffle of every task in
    :func:`calibration_tasks`, one task after another, so each task gets an equal share of `limit`.
    Tasks without a train split (boolq, piqa, hellaswag offline) raise ``FileNotFoundError``.
    """
    rng = random.Random(seed)
    if name == CMQA:
        tasks = calibration_tasks(data_dir)
        if not tasks:
            raise FileNotFoundError("cmqa: no task has a train split on disk")
        # a task contributes at most `limit` items, so each pool stops there (same mix, less work)
        pools = [calibration_items(task, data_dir, limit, seed=rng.randrange(2**31)) for task in tasks]
        mixed: list[dict[str, Any]] = []
        for position in range(max(len(pool) for pool in pools)):
            for pool in pools:
                if position < len(pool):
                    mixed.append(pool[position])
                    if limit is not None and len(mixed) >= limit:
                        return mixed
        return mixed

    _check_task(name)
    records = _records(name, CALIBRATION_SPLIT, resolve_data_dir(data_dir))
    order = list(range(len(records)))
    rng.shuffle(order)
    if limit is not None:
        order = order[: max(0, limit)]
    if name == "gsm8k":
        return [_gsm8k_calibration(format_gsm8k(records[i], i)) for i in order]
    return [format_record(name, records[i], i).as_prompt_choices() for i in order]

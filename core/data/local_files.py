"""Read the task files under the offline data folder into the Hugging Face record layout.

Each shared copy has its own layout (labels in side files, a 6-line text form, the original ARC
layout); converting them here to the layout of the Hub data set lm-eval-harness reads lets one
formatter in `tasks.py` serve both the offline files and the `datasets` path.
"""

from __future__ import annotations

import bz2
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]

# (task, split) -> files relative to the data folder; the first is the record file.
FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("boolq", "validation"): ("boolq/val.jsonl",),
    ("piqa", "validation"): ("piqa/valid.jsonl", "piqa/valid-labels.lst"),
    ("hellaswag", "validation"): ("hellaswag/hellaswag_val_full.txt.bz2",),
    ("winogrande", "validation"): ("winogrande/dev.jsonl", "winogrande/dev-labels.lst"),
    ("winogrande", "train"): ("winogrande/train_l.jsonl", "winogrande/train_l-labels.lst"),
    ("openbookqa", "train"): ("openbookqa/train.jsonl",),
    ("openbookqa", "test"): ("openbookqa/test.jsonl",),
    ("gsm8k", "train"): ("gsm8k/train.jsonl",),
    ("gsm8k", "test"): ("gsm8k/test.jsonl",),
}
for _arc, _stem in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
    for _split in ("train", "validation", "test"):
        FILES[(_arc, _split)] = (f"{_arc}/{_stem}-{_split}.jsonl",)


def task_files(task: str, split: str, data_dir: Path) -> list[Path]:
    """The files a (task, split) reads; raises KeyError when no offline copy is known."""
    return [Path(data_dir) / rel for rel in FILES[(task, split)]]


def has_local(task: str, split: str, data_dir: Path) -> bool:
    """True when every file of the (task, split) exists under `data_dir`."""
    if (task, split) not in FILES:
        return False
    return all(path.is_file() for path in task_files(task, split, data_dir))


def _jsonl(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _labels(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _piqa(files: list[Path]) -> Iterator[Record]:
    """PIQA keeps gold labels in a separate .lst file aligned line by line with the jsonl."""
    records = list(_jsonl(files[0]))
    labels = _labels(files[1])
    if len(records) != len(labels):
        raise ValueError(f"{files[0]}: {len(records)} records but {len(labels)} labels")
    for index, (record, label) in enumerate(zip(records, labels, strict=True)):
        yield {**record, "label": int(label), "idx": index}


def _hellaswag(files: list[Path]) -> Iterator[Record]:
    """6-line text records: '<activity_label>: <ctx>', gold index, four endings."""
    with bz2.open(files[0], "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{files[0]}: {len(lines)} lines is not a multiple of 6")
    for index in range(len(lines) // 6):
        block = lines[6 * index : 6 * index + 6]
        yield {"query_uncapitalised": block[0], "label": int(block[1]), "endings": block[2:6], "ind": index}


def _winogrande(files: list[Path]) -> Iterator[Record]:
    """The jsonl `answer` ('1'/'2') must agree with the side .lst file; a mismatch means a bad copy."""
    records = list(_jsonl(files[0]))
    if len(files) > 1 and files[1].is_file():
        labels = _labels(files[1])
        if labels != [str(record["answer"]) for record in records]:
            raise ValueError(f"{files[0]}: answers disagree with {files[1].name}")
    yield from records


def _openbookqa(files: list[Path]) -> Iterator[Record]:
    """Original Main layout -> HF layout (`question_stem`, `choices: {text, label}`)."""
    for record in _jsonl(files[0]):
        question = record["question"]
        yield {
            "id": record["id"],
            "question_stem": question["stem"],
            "choices": {
                "text": [choice["text"] for choice in question["choices"]],
                "label": [choice["label"] for choice in question["choices"]],
            },
            "answerKey": record["answerKey"],
        }


def _boolq(files: list[Path]) -> Iterator[Record]:
    yield from _jsonl(files[0])


def _plain(files: list[Path]) -> Iterator[Record]:
    for index, record in enumerate(_jsonl(files[0])):
        yield {"idx": index, **record}


_READERS = {
    "boolq": _boolq,
    "piqa": _piqa,
    "hellaswag": _hellaswag,
    "winogrande": _winogrande,
    "openbookqa": _openbookqa,
    "arc_easy": _plain,
    "arc_challenge": _plain,
    "gsm8k": _plain,
}


@functools.lru_cache(maxsize=32)
def _cached_records(task: str, split: str, data_dir: str) -> tuple[Record, ...]:
    return tuple(_READERS[task](task_files(task, split, Path(data_dir))))


def read_records(task: str, split: str, data_dir: Path) -> list[Record]:
    """All records of a (task, split) from the offline copy, in file order.

    Parsed files are cached per process (the data folder is read-only): calibration mixes and
    repeated evaluations re-read the same splits many times.
    """
    return [dict(record) for record in _cached_records(task, split, os.path.abspath(data_dir))]

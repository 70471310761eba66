"""Loaders against the real offline files: counts from the READMEs, labels, lm-eval prompt forms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from core.data import tasks
from core.data.items import AnswerItem, MultipleChoiceItem
from core.data.paths import default_data_dir, fingerprint

DATA = default_data_dir()

EVAL_COUNTS = {
    "boolq": 3270,
    "piqa": 1838,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "openbookqa": 500,
    "gsm8k": 1319,
}


@pytest.fixture(scope="module")
def eval_items() -> dict[str, list]:
    return {name: tasks.load_task(name, "eval", DATA) for name in tasks.ALL_TASKS}


@pytest.mark.parametrize("name", tasks.ALL_TASKS)
def test_eval_split_counts_match_readmes(eval_items, name: str) -> None:
    assert len(eval_items[name]) == EVAL_COUNTS[name]


@pytest.mark.parametrize("name", tasks.CMQA_TASKS)
def test_labels_in_range_and_choices_space_prefixed(eval_items, name: str) -> None:
    for item in eval_items[name]:
        assert isinstance(item, MultipleChoiceItem)
        assert 0 <= item.label < len(item.choices)
        assert all(choice.startswith(" ") for choice in item.choices)
    assert len({item.id for item in eval_items[name]}) == len(eval_items[name])


def test_boolq_string_labels_are_mapped(eval_items) -> None:
    counts = Counter(item.label for item in eval_items["boolq"])
    assert counts == {1: 2033, 0: 1237}
    first = eval_items["boolq"][0]
    assert first.choices == [" no", " yes"]
    assert first.prompt.startswith("Ethanol fuel -- ")
    assert first.prompt.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")


def test_piqa_labels_come_from_the_lst_file(eval_items) -> None:
    lines = (DATA / "piqa" / "valid-labels.lst").read_text().split()
    assert [item.label for item in eval_items["piqa"]] == [int(x) for x in lines]
    assert eval_items["piqa"][0].prompt.startswith("Question: How do I ready a guinea pig cage")
    assert eval_items["piqa"][0].prompt.endswith("\nAnswer:")


def test_hellaswag_records_gold_counts_and_capitalisation(eval_items) -> None:
    items = eval_items["hellaswag"]
    assert Counter(item.label for item in items) == {0: 2515, 1: 2485, 2: 2584, 3: 2458}
    assert all(len(item.choices) == 4 for item in items)
    assert items[0].prompt == "Roof shingle removal: A man is sitting on a roof. He"
    assert items[0].choices[3] == " starts pulling up roofing on a roof."
    assert not any("[" in item.prompt and "]" in item.prompt for item in items)


def test_winogrande_is_partial_scoring(eval_items) -> None:
    items = eval_items["winogrande"]
    assert Counter(item.label for item in items) == {0: 628, 1: 639}
    first = items[0]
    assert first.label == 1  # answer "2" -> index 1
    assert first.requests == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    folded = first.as_prompt_choices()
    assert [folded["prompt"] + c for c in folded["choices"]] == [
        "Sarah was a much better surgeon than Maria so Sarah always got the easier cases.",
        "Sarah was a much better surgeon than Maria so Maria always got the easier cases.",
    ]


@pytest.mark.parametrize(("name", "numeric"), [("arc_easy", 97), ("arc_challenge", 22)])
def test_arc_numeric_labels_located_in_own_label_list(eval_items, name: str, numeric: int) -> None:
    import json

    stem = "ARC-Easy" if name == "arc_easy" else "ARC-Challenge"
    records = [json.loads(line) for line in (DATA / name / f"{stem}-test.jsonl").open()]
    digit_records = [r for r in records if r["answerKey"].isdigit()]
    assert len(digit_records) == numeric
    by_id = {item.id: item for item in eval_items[name]}
    for record in digit_records:
        item = by_id[record["id"]]
        gold_text = record["choices"]["text"][record["choices"]["label"].index(record["answerKey"])]
        assert item.choices[item.label] == " " + gold_text
    assert Counter(len(item.choices) for item in eval_items[name])[4] < len(eval_items[name])


def test_openbookqa_layout(eval_items) -> None:
    items = eval_items["openbookqa"]
    assert items[0].id == "8-343"
    assert not items[0].prompt.startswith("Question:")
    assert all(len(item.choices) == 4 for item in items)


def test_gsm8k_answers(eval_items) -> None:
    items = eval_items["gsm8k"]
    assert all(isinstance(item, AnswerItem) for item in items)
    assert items[0].final_answer == "18"
    assert items[0].prompt.startswith("Question: Janet")
    assert items[0].prompt.endswith("\nAnswer:")
    assert all(int(item.final_answer) == int(item.final_answer) for item in items)
    assert sum("," in item.answer.split("####")[-1] for item in items) == 14


def test_limit_keeps_file_order() -> None:
    full = tasks.load_task("arc_easy", "test", DATA)
    assert tasks.load_task("arc_easy", "test", DATA, limit=5) == full[:5]


def test_train_splits_and_counts() -> None:
    assert len(tasks.load_task("winogrande", "train", DATA)) == 10234
    assert len(tasks.load_task("openbookqa", "train", DATA)) == 4957
    assert len(tasks.load_task("arc_challenge", "train", DATA)) == 1119
    assert len(tasks.load_task("gsm8k", "train", DATA)) == 7473
    assert tasks.calibration_tasks(DATA) == ["winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def test_calibration_never_uses_evaluation_split() -> None:
    for name in ("winogrande", "arc_easy", "openbookqa"):
        eval_ids = {item.id for item in tasks.load_task(name, "eval", DATA)}
        calib = tasks.calibration_items(name, DATA, limit=200, seed=3)
        assert len(calib) == 200
        assert not eval_ids & {entry["id"] for entry in calib}


def test_calibration_is_seeded_and_cmqa_mixes_tasks() -> None:
    first = tasks.calibration_items("cmqa", DATA, limit=40, seed=7)
    again = tasks.calibration_items("cmqa", DATA, limit=40, seed=7)
    other = tasks.calibration_items("cmqa", DATA, limit=40, seed=8)
    assert first == again
    assert first != other
    assert Counter(entry["task"] for entry in first) == {
        "winogrande": 10,
        "arc_easy": 10,
        "arc_challenge": 10,
        "openbookqa": 10,
    }
    for entry in first:
        assert set(entry) >= {"prompt", "choices", "label"}
        assert 0 <= entry["label"] < len(entry["choices"])


def test_gsm8k_calibration_has_answers() -> None:
    entries = tasks.calibration_items("gsm8k", DATA, limit=3, seed=0)
    assert all(entry["answer"].startswith(" ") and "####" in entry["answer"] for entry in entries)


def test_no_train_split_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tasks.calibration_items("boolq", DATA, limit=5)
    with pytest.raises(FileNotFoundError):
        tasks.load_task("arc_easy", "test", tmp_path)
    with pytest.raises(ValueError):
        tasks.load_task("mmlu", "test", DATA)


def test_fingerprints_match_readme_sha256() -> None:
    prints = fingerprint(tasks.split_files("piqa", "eval", DATA), DATA)
    assert prints == {
        "piqa/valid-labels.lst": "b4192dc3a2a0363d9d60ccf79800cbbe2f32ebb17726efdde6970e0b8131bceb",
        "piqa/valid.jsonl": "93503cc97c679e459b065c3d13e848282e44b2a25213985bed3e5d458abef72d",
    }


def test_default_data_dir_env_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GISP_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("GISP_DATA_DIR")
    assert default_data_dir().name == "datasets"

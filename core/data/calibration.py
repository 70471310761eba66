"""Calibration items: what each objective reads, where named sets come from, and how bad files are refused.

Kept free of torch so the API can validate an uploaded set with the same rules the engine applies.
One format per objective:

* ``perplexity``: plain text (a ``.txt`` file, or JSONL lines ``{"text": ...}``)
* ``margin``: JSONL lines ``{"prompt": str, "choices": [str, ...], "label": int}``
* ``answer``: JSONL lines ``{"prompt": str, "answer": str}``
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import CalibrationError
from core.pruning_spec import Objective

NAMED_TEXT_SETS = ("wikitext2", "c4")
NAMED_ANSWER_SETS = ("gsm8k",)
# The file each named text or answer set reads under the data folder (multiple-choice sets: core.data.tasks).
NAMED_SET_FILES = {
    "wikitext2": "wikitext-2/wiki.valid.tokens",
    "c4": "c4/c4-train.00000-of-01024.first1000.jsonl",
    "gsm8k": "gsm8k/train.jsonl",
}


class TextItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    text: str = Field(min_length=1)


class MultipleChoiceCalibrationItem(BaseModel):
    """A prompt, its candidate answers and the index of the correct one."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    prompt: str
    choices: list[str] = Field(min_length=2)
    label: int

    @field_validator("choices")
    @classmethod
    def _choices_not_empty(cls, choices: list[str]) -> list[str]:
        if any(not c.strip() for c in choices):
            raise ValueError("every choice must be a non-empty string")
        return choices

    @model_validator(mode="after")
    def _label_points_at_a_choice(self) -> MultipleChoiceCalibrationItem:
        if not 0 <= self.label < len(self.choices):
            raise ValueError(f"label {self.label} is not an index into {len(self.choices)} choices")
        return self


class AnswerCalibrationItem(BaseModel):
    """A prompt and the reference answer whose tokens carry the loss."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    prompt: str
    answer: str = Field(min_length=1)


CalibrationItem = TextItem | MultipleChoiceCalibrationItem | AnswerCalibrationItem
ITEM_TYPES: dict[Objective, type[BaseModel]] = {
    Objective.perplexity: TextItem,
    Objective.margin: MultipleChoiceCalibrationItem,
    Objective.answer: AnswerCalibrationItem,
}


def default_data_dir() -> Path:
    """``GISP_DATA_DIR`` if set, else the ``shared/datasets`` folder beside the repository."""
    configured = os.environ.get("GISP_DATA_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def validate_items(records: Iterable[object], objective: Objective) -> list[CalibrationItem]:
    """Turn raw records into typed items, naming the first bad record and field in the error."""
    item_type = ITEM_TYPES[objective]
    items: list[CalibrationItem] = []
    for index, record in enumerate(records):
        if objective is Objective.perplexity and isinstance(record, str):
            record = {"text": record}
        if not isinstance(record, dict):
            raise CalibrationError(
                f"expected a JSON object, got {type(record).__name__}", field=f"items[{index}]"
            )
        try:
            items.append(item_type.model_validate(record))  # type: ignore[arg-type]
        except ValidationError as error:
            first = error.errors()[0]
            location = ".".join(str(part) for part in first["loc"])
            field = f"items[{index}].{location}" if location else f"items[{index}]"
            raise CalibrationError(first["msg"], field=field) from None
    if not items:
        raise CalibrationError(f"no calibration items for objective '{objective.value}'", field="calibration")
    if objective is Objective.perplexity and not any(item.text.strip() for item in items):  # type: ignore[union-attr]
        raise CalibrationError("calibration text is empty", field="calibration")
    return items


def parse_calibration_bytes(
    data: bytes, objective: Objective, *, filename: str = "upload"
) -> list[CalibrationItem]:
    """Parse an uploaded or local file: JSONL when it looks like JSONL, plain text otherwise (perplexity only)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CalibrationError("file is not UTF-8 text", field="calibration") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CalibrationError(f"{filename} is empty", field="calibration")
    looks_like_jsonl = filename.endswith((".jsonl", ".json")) or lines[0].lstrip().startswith("{")
    if not looks_like_jsonl:
        if objective is not Objective.perplexity:
            raise CalibrationError(
                f"objective '{objective.value}' needs JSONL records, got plain text", field="calibration"
            )
        return validate_items([text], objective)
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise CalibrationError(
                f"line {number} is not valid JSON ({error.msg})", field="calibration"
            ) from None
        except RecursionError:  # the C parser recurses once per level of '[' or '{'
            raise CalibrationError(f"line {number} nests too deeply", field="calibration") from None
    return validate_items(records, objective)


def load_calibration_items(
    source: str | Path,
    objective: Objective,
    *,
    data_dir: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[CalibrationItem]:
    """Resolve a named set or a file path into validated items for ``objective``."""
    objective = Objective(objective)
    data_dir = data_dir or default_data_dir()
    name = str(source)
    if name in NAMED_TEXT_SETS:
        _require(objective, Objective.perplexity, name)
        return validate_items(_named_texts(name, data_dir), objective)
    if name in NAMED_ANSWER_SETS:
        _require(objective, Objective.answer, name)
        return validate_items(_gsm8k_train(data_dir, limit), objective)
    if name == "cmqa" or name in _multiple_choice_task_names():
        _require(objective, Objective.margin, name)
        from core.data.tasks import calibration_items

        return validate_items(calibration_items(name, data_dir, limit=limit, seed=seed), objective)
    path = Path(name)
    if not path.is_file():
        known = ", ".join((*NAMED_TEXT_SETS, *NAMED_ANSWER_SETS, "cmqa", *_multiple_choice_task_names()))
        raise CalibrationError(f"'{name}' is neither a named set ({known}) nor a file", field="calibration")
    items = parse_calibration_bytes(path.read_bytes(), objective, filename=path.name)
    return items[:limit] if limit else items


def named_set_on_disk(name: str, data_dir: Path | None = None) -> bool:
    """Whether a named set's files are in the data folder (a connected worker could still fetch it)."""
    data_dir = data_dir or default_data_dir()
    if name in NAMED_SET_FILES:
        return (data_dir / NAMED_SET_FILES[name]).is_file()
    from core.data.tasks import CALIBRATION_SPLIT, CMQA, calibration_tasks, has_split

    if name == CMQA:
        return bool(calibration_tasks(data_dir))
    return name in _multiple_choice_task_names() and has_split(name, CALIBRATION_SPLIT, data_dir)


def fingerprint(items: Sequence[CalibrationItem]) -> str:
    """sha256 of the items' canonical JSON: the same data gives the same fingerprint wherever it came from."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item.model_dump(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _require(objective: Objective, expected: Objective, name: str) -> None:
    if objective is not expected:
        raise CalibrationError(
            f"named set '{name}' is calibration for objective '{expected.value}', not '{objective.value}'",
            field="calibration",
        )


def _multiple_choice_task_names() -> tuple[str, ...]:
    return ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def _named_texts(name: str, data_dir: Path) -> list[str]:
    """Calibration text, never the evaluation split: WikiText-2 validation, or the C4 train prefix."""
    path = data_dir / NAMED_SET_FILES[name]
    if name == "wikitext2":
        if path.is_file():
            return _paragraphs(path.read_text(encoding="utf-8"))
        return _from_hub_datasets("wikitext", "wikitext-2-raw-v1", "validation", "text")
    if path.is_file():
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]
    return _from_hub_datasets("allenai/c4", "en", "train", "text", limit=1000)


def _paragraphs(text: str) -> list[str]:
    """Split WikiText into articles at top-level headings so samples rarely straddle two articles."""
    articles: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if (stripped.startswith("= ") and not stripped.startswith("= = ")) or not articles:
            articles.append([])
        if stripped:
            articles[-1].append(stripped)
    return ["\n".join(lines) for lines in articles if lines]


def _gsm8k_train(data_dir: Path, limit: int | None) -> list[dict[str, str]]:
    path = data_dir / NAMED_SET_FILES["gsm8k"]
    if not path.is_file():
        raise CalibrationError(f"GSM8K train split not found at {path}", field="calibration")
    items = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                items.append(
                    {"prompt": f"Question: {record['question']}\nAnswer:", "answer": " " + record["answer"]}
                )
            if limit and len(items) >= limit:
                break
    return items


def _from_hub_datasets(
    path: str, config: str, split: str, column: str, limit: int | None = None
) -> list[str]:
    """On a connected machine, the same named sets come from the ``datasets`` package."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise CalibrationError(
            f"named set '{path}' is not in the data folder and the 'datasets' package is not installed",
            field="calibration",
        ) from None
    rows = datasets.load_dataset(path, config, split=split, streaming=limit is not None)
    texts = [row[column] for _, row in zip(range(limit or 10**9), rows)]
    return [t for t in texts if t.strip()]

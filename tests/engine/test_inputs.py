"""Bad inputs fail with a message naming the field; objectives compute the loss they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import GPT2Config, GPT2LMHeadModel

from core.data.calibration import (
    AnswerCalibrationItem,
    MultipleChoiceCalibrationItem,
    TextItem,
    load_calibration_items,
    parse_calibration_bytes,
)
from core.engine.loading import LoadedModel, load_model
from core.engine.objectives import CalibrationPool, batch_loss
from core.engine.pruner import prune
from core.errors import CalibrationError, UnsafeModelError, UnsupportedModelError, UserInputError
from core.pruning_spec import Objective, PruneSettings
from tests.engine.conftest import CORPUS, build_loaded, build_tokenizer

ITEMS = [TextItem(text=" ".join(CORPUS))]


@pytest.mark.parametrize(
    ("sparsities", "message"),
    [
        ([0.0], "strictly between 0 and 1"),
        ([1.0], "strictly between"),
        ([-0.2], "strictly"),
        ([0.3, 0.3], "distinct"),
        ([], "at least 1"),
    ],
)
def test_bad_sparsities_name_the_field(sparsities: list[float], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        PruneSettings(sparsities=sparsities)
    first = error.value.errors()[0]
    assert first["loc"][0] == "sparsities"
    assert message in str(error.value)


def test_unknown_fields_and_bad_steps_are_refused() -> None:
    with pytest.raises(ValidationError, match="steps"):
        PruneSettings(sparsities=[0.2], steps=0)
    with pytest.raises(ValidationError, match="sparsity_list"):
        PruneSettings(sparsities=[0.2], sparsity_list=[0.3])


def test_unknown_architecture_is_refused() -> None:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=300)
    loaded = LoadedModel(GPT2LMHeadModel(config), build_tokenizer(), {})
    with pytest.raises(UnsupportedModelError) as error:
        prune(loaded, ITEMS, PruneSettings(sparsities=[0.2]))
    assert error.value.field == "model" and "gpt2" in str(error.value)
    assert "llama" in str(error.value)  # says what is supported


def test_unreachable_sparsity_and_bad_protected_layers_are_refused() -> None:
    loaded = build_loaded("llama", layers=4)
    with pytest.raises(UserInputError) as error:
        prune(loaded, ITEMS, PruneSettings(sparsities=[0.9], protected_layers=[0, 1, 2]))
    assert error.value.field == "sparsities"
    with pytest.raises(UserInputError) as error:
        prune(loaded, ITEMS, PruneSettings(sparsities=[0.2], protected_layers=[7]))
    assert error.value.field == "protected_layers"


def test_empty_calibration_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CalibrationError) as error:
        load_calibration_items(empty, Objective.perplexity)
    assert error.value.field == "calibration" and "empty" in str(error.value)
    with pytest.raises(CalibrationError, match="fewer than seq_len"):
        CalibrationPool([TextItem(text="tiny")], build_tokenizer(), PruneSettings(sparsities=[0.2]))


def test_multiple_choice_item_without_label_names_the_item_and_field() -> None:
    lines = [
        json.dumps({"prompt": "Q: 2+2?", "choices": [" 4", " 5"], "label": 0}),
        json.dumps({"prompt": "Q: 3+3?", "choices": [" 6", " 7"]}),
    ]
    with pytest.raises(CalibrationError) as error:
        parse_calibration_bytes("\n".join(lines).encode(), Objective.margin, filename="set.jsonl")
    assert error.value.field == "items[1].label"
    with pytest.raises(CalibrationError) as error:
        parse_calibration_bytes(
            json.dumps({"prompt": "Q", "choices": [" a", " b"], "label": 2}).encode(), Objective.margin
        )
    assert "not an index" in str(error.value)


def test_answer_items_need_an_answer_and_text_needs_the_right_objective() -> None:
    with pytest.raises(CalibrationError) as error:
        parse_calibration_bytes(json.dumps({"prompt": "Q"}).encode(), Objective.answer)
    assert error.value.field == "items[0].answer"
    with pytest.raises(CalibrationError, match="needs JSONL"):
        parse_calibration_bytes(b"plain text", Objective.margin)
    with pytest.raises(CalibrationError, match="not valid JSON"):
        parse_calibration_bytes(b'{"text": ', Objective.perplexity, filename="x.jsonl")


def test_named_sets_resolve_to_calibration_splits_only() -> None:
    wiki = load_calibration_items("wikitext2", Objective.perplexity)
    assert len(wiki) > 10 and all(isinstance(i, TextItem) for i in wiki)
    test_split = (
        Path(__file__).resolve().parents[3] / "shared/datasets/wikitext-2-raw/wiki.test.raw"
    ).read_text()
    assert wiki[0].text.splitlines()[0] not in test_split[:2000]
    gsm = load_calibration_items("gsm8k", Objective.answer, limit=5)
    assert len(gsm) == 5 and gsm[0].prompt.startswith("Question:")
    with pytest.raises(CalibrationError, match="objective 'perplexity'"):
        load_calibration_items("wikitext2", Objective.margin)
    with pytest.raises(CalibrationError, match="neither a named set"):
        load_calibration_items("no-such-set", Objective.perplexity)


def test_margin_objective_is_correct_minus_mean_wrong() -> None:
    tokenizer = build_tokenizer()
    loaded = build_loaded("llama")
    item = MultipleChoiceCalibrationItem(
        prompt="The quick brown", choices=[" fox", " dog", " model"], label=0
    )
    settings = PruneSettings(objective="margin", sparsities=[0.2], samples=1)
    pool = CalibrationPool([item], tokenizer, settings)
    (batch,) = pool.batches(0)
    with torch.no_grad():
        margin = float(batch_loss(loaded.model, batch))

    def answer_loss(choice: str) -> float:
        answer = CalibrationPool(
            [AnswerCalibrationItem(prompt=item.prompt, answer=choice)],
            tokenizer,
            PruneSettings(objective="answer", sparsities=[0.2], samples=1),
        )
        with torch.no_grad():
            return float(batch_loss(loaded.model, answer.batches(0)[0]))

    expected = answer_loss(" fox") - (answer_loss(" dog") + answer_loss(" model")) / 2
    assert margin == pytest.approx(expected, abs=1e-5)


def test_answer_objective_ignores_prompt_tokens() -> None:
    tokenizer = build_tokenizer()
    pool = CalibrationPool(
        [AnswerCalibrationItem(prompt="Question: What is two plus two?\nAnswer:", answer=" four")],
        tokenizer,
        PruneSettings(objective="answer", sparsities=[0.2], samples=1),
    )
    (sequence,) = pool.sequences(0)
    answer_ids = tokenizer(" four", add_special_tokens=False)["input_ids"]
    assert [t for t in sequence.labels if t != -100] == answer_ids
    assert sequence.input_ids[-len(answer_ids) :] == answer_ids


def test_calibration_draws_are_seeded_per_step() -> None:
    tokenizer = build_tokenizer()
    settings = PruneSettings(sparsities=[0.2], samples=3, seq_len=8)
    pool = CalibrationPool(ITEMS, tokenizer, settings)
    assert pool.sequences(0) == CalibrationPool(ITEMS, tokenizer, settings).sequences(0)
    assert pool.sequences(0) != pool.sequences(1)


def test_pickled_weights_and_remote_code_are_refused(tmp_path: Path) -> None:
    model = build_loaded("llama").model
    pickled = tmp_path / "pickled"
    model.save_pretrained(pickled, safe_serialization=False)
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match="pickled"):
        load_model(pickled)
    remote = tmp_path / "remote"
    model.save_pretrained(remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeModelError, match="auto_map"):
        load_model(remote)
    with pytest.raises(UserInputError, match="neither a model directory"):
        load_model(tmp_path / "missing" / "dir")


def test_local_directory_loads_with_identity(tmp_path: Path) -> None:
    loaded = build_loaded("llama")
    loaded.model.save_pretrained(tmp_path / "m")
    loaded.tokenizer.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.identity["source"] == "local" and len(again.identity["weights_sha256"]) == 64
    ids = torch.randint(3, 300, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, loaded.model(ids).logits)

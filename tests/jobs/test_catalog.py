"""Local models described from their headers alone, checked against the libraries that write the files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from core.jobs.catalog import (
    HeaderError,
    available_named_sets,
    gguf_summary,
    local_model_names,
    local_models,
    safetensors_parameters,
)


def _write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    from safetensors.numpy import save_file

    tensors = {name: np.zeros(shape, dtype=np.float16) for name, shape in shapes.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(t.size for t in tensors.values())


def test_safetensors_count_matches_numpy_sizes(tmp_path: Path) -> None:
    expected = _write_safetensors(
        tmp_path / "a.safetensors", {"w": (3, 5), "b": (7,), "s": (), "e": (2, 0, 4)}
    )
    assert safetensors_parameters(tmp_path / "a.safetensors") == expected == 15 + 7 + 1


def test_sharded_folder_sums_its_shards_and_reads_the_family(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "sharded"
    folder.mkdir(parents=True)
    first = _write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": (4, 4)})
    second = _write_safetensors(folder / "model-00002-of-00002.safetensors", {"b": (10, 3)})
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (folder / "tokenizer.json").write_text("{}")
    (model,) = local_models(tmp_path / "models")
    assert (model.id, model.family, model.format) == ("local/sharded", "qwen2", "safetensors")
    assert model.parameters == first + second
    assert model.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_listing_skips_what_no_request_can_name(tmp_path: Path) -> None:
    root = tmp_path / "models"
    for name in ("good", ".hidden", "no-config"):
        (root / name).mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    (root / ".hidden" / "config.json").write_text("{}")
    (root / "notes.txt").write_text("not a model")
    assert local_model_names(root) == ["good"]
    assert [m.family for m in local_models(root)] == [None]
    assert local_models(tmp_path / "absent") == []


def test_a_corrupt_header_lists_the_model_without_a_count(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(HeaderError):
        safetensors_parameters(folder / "model.safetensors")
    (model,) = local_models(tmp_path / "models")
    assert model.parameters is None and model.family == "llama"


def test_gguf_header_gives_architecture_and_count(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), arch="qwen2")
    writer.add_block_count(2)
    writer.add_token_list(["<s>", "</s>", "hello", "wörld"])  # an array of strings to walk past
    writer.add_token_scores([0.0, 0.5, -1.0, 2.0])
    writer.add_string("general.name", "tiny")
    tensors = {
        "a": np.zeros((4, 6), np.float32),
        "b": np.zeros((3,), np.float32),
        "c": np.zeros((2, 3, 5), np.float16),
    }
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_summary(path) == ("qwen2", sum(t.size for t in tensors.values()))
    (model,) = local_models(tmp_path)
    assert (model.id, model.format, model.family) == ("local/tiny", "gguf", "qwen2")


@pytest.mark.slow
def test_gguf_count_matches_the_gguf_reader_on_smollm2() -> None:
    from gguf import GGUFReader

    from core.assets import smollm2_gguf

    path = smollm2_gguf()
    reader = GGUFReader(str(path))
    architecture, parameters = gguf_summary(path)
    assert architecture == "llama"
    assert parameters == sum(int(t.n_elements) for t in reader.tensors)


def test_named_sets_are_listed_when_their_files_exist(tmp_path: Path) -> None:
    assert available_named_sets(tmp_path) == []
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "wiki.valid.tokens").write_text(" = A = \n text \n")
    (tmp_path / "openbookqa").mkdir()
    (tmp_path / "openbookqa" / "train.jsonl").write_text("{}\n")
    listed = {(s.name, s.objective.value) for s in available_named_sets(tmp_path)}
    assert listed == {("wikitext2", "perplexity"), ("openbookqa", "margin"), ("cmqa", "margin")}

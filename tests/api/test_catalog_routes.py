"""GET /v1/models and GET /v1/calibration-sets, and the unknown_model error naming what exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import calibration_text

pytestmark = pytest.mark.services


def test_models_lists_the_local_model_with_its_true_size(
    client_factory, tiny_model: str, service_dirs
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = service_dirs["models"] / "tiny"
    listing = client_factory("catalog-models").get("/v1/models")
    assert listing.status_code == 200
    body = listing.json()
    assert body["hub_models_allowed"] is False
    (entry,) = [m for m in body["data"] if m["id"] == tiny_model]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert entry["family"] == AutoConfig.from_pretrained(folder).model_type == "llama"
    assert entry["size_bytes"] == sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    assert entry["format"] == "safetensors" and entry["supported"] is True


def test_models_needs_a_key(app) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    assert TestClient(app).get("/v1/models").status_code == 401


def test_unknown_model_names_the_available_ones(client_factory, tiny_model: str) -> None:
    body = {"model": "local/tinyy", "calibration": {"name": "wikitext2"}, "sparsities": [0.2]}
    answer = client_factory("catalog-unknown").post("/v1/jobs", json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("unknown_model", "model.id")
    assert tiny_model in error["message"] and "'tinyy'" in error["message"]


def test_calibration_sets_pages_the_tenants_uploads(client_factory, service_dirs) -> None:
    owner = client_factory("catalog-sets")
    other = client_factory("catalog-sets-other")
    uploaded = []
    for i in range(3):
        answer = owner.post(
            "/v1/calibration-sets",
            files={"file": (f"c{i}.txt", calibration_text().encode())},
            data={"objective": "perplexity", "name": f"set {i}"},
        )
        assert answer.status_code == 201, answer.text
        uploaded.append(answer.json()["id"])
    margin = owner.post(
        "/v1/calibration-sets",
        files={"file": ("m.jsonl", b'{"prompt": "2+2=", "choices": ["4", "5"], "label": 0}\n')},
        data={"objective": "margin"},
    )
    assert margin.status_code == 201, margin.text

    seen, cursor, first = [], None, None
    while True:
        params = {"limit": 2, "objective": "perplexity"} | ({"cursor": cursor} if cursor else {})
        page = owner.get("/v1/calibration-sets", params=params).json()
        first = first or page
        if cursor:
            assert page["named"] == []  # named sets come with the first page only
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(uploaded))  # newest first, each once
    assert all(s["objective"] == "perplexity" for s in first["named"])
    everything = owner.get("/v1/calibration-sets").json()
    assert {s["id"] for s in everything["data"]} == {*uploaded, margin.json()["id"]}
    assert other.get("/v1/calibration-sets").json()["data"] == []
    bad = owner.get("/v1/calibration-sets", params={"cursor": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"
    bad = owner.get("/v1/calibration-sets", params={"objective": "nonsense"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "objective"


def test_named_sets_follow_the_data_folder(client_factory, service_dirs) -> None:
    gsm8k = service_dirs["data"] / "gsm8k"
    gsm8k.mkdir(exist_ok=True)
    (gsm8k / "train.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    named = client_factory("catalog-named").get("/v1/calibration-sets").json()["named"]
    assert {"name": "gsm8k", "objective": "answer"} in named
    assert "c4" not in {s["name"] for s in named}  # no file for it in this data folder

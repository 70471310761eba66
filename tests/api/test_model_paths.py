"""Symlinks in the models folder are followed only to real paths inside it, by the API and the worker alike."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.jobs.references import resolve_local_model
from tests.engine.gguf_fixtures import pruned_tiny_checkpoint

pytestmark = pytest.mark.services

BODY = {
    "calibration": {"name": "wikitext2"},
    "samples": 4,
    "seq_len": 32,
    "sparsities": [0.2],
    "steps": 2,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, service_dirs, tiny_model: str) -> Path:
    """A models folder with a real model, an alias to it, and three ways out of the folder."""
    root = tmp_path_factory.mktemp("linked") / "models"
    outside = root.parent / "outside"
    shutil.copytree(service_dirs["models"] / "tiny", root / "tiny")
    shutil.copytree(service_dirs["models"] / "tiny", outside / "stolen")
    (root / "alias").symlink_to(root / "tiny", target_is_directory=True)  # inside: allowed
    (root / "escape").symlink_to(outside / "stolen", target_is_directory=True)  # the folder leads out
    (root / "leaky").mkdir()  # a real folder whose files lead out
    for file in (outside / "stolen").iterdir():
        (root / "leaky" / file.name).symlink_to(file)
    (root / "relative").symlink_to(Path("..") / "outside" / "stolen", target_is_directory=True)
    pruned_tiny_checkpoint(root / "pruned")  # a GISP checkpoint: its config names the family it came from
    return root


@pytest.fixture(scope="module")
def client(service_settings, make_key, models: Path) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    from api.main import create_app

    app = create_app(service_settings.model_copy(update={"models_dir": models}))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {make_key('linked')}"
        yield client


@pytest.mark.parametrize("name", ["escape", "leaky", "relative"])
def test_links_out_of_the_models_folder_are_not_models(client, models: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    assert resolve_local_model(models, name) is None  # what the worker resolves, too
    answer = client.post("/v1/jobs", json=BODY | {"model": f"local/{name}"})
    assert answer.status_code == 422, answer.text
    assert (answer.json()["error"]["field"], answer.json()["error"]["code"]) == ("model.id", "unknown_model")


def test_an_already_pruned_checkpoint_is_refused_naming_why(client) -> None:  # type: ignore[no-untyped-def]
    answer = client.post("/v1/jobs", json=BODY | {"model": "local/pruned"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "model.id"
    assert "already pruned" in answer.json()["error"]["message"]


def test_only_models_inside_are_offered(client, models: Path) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/v1/models").json()
    names = {model["id"] for model in listed["data"]}
    assert names == {"local/tiny", "local/alias", "local/pruned"}, listed
    families = {model["id"]: model["family"] for model in listed["data"]}
    assert families["local/pruned"] == "gisp"  # listed as what it is: a pruned checkpoint, not a llama
    assert resolve_local_model(models, "alias") == models / "alias"
    assert client.post("/v1/jobs", json=BODY | {"model": "local/alias"}).status_code == 201

"""Uploading calibration sets: validation per objective, size limit, storage, use by a job."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import calibration_text

pytestmark = pytest.mark.services


def upload(client, data: bytes, objective: str = "perplexity", filename: str = "cal.txt"):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/calibration-sets",
        files={"file": (filename, data)},
        data={"objective": objective, "name": "mine"},
    )


def test_upload_text_then_use_it(client_factory, tiny_model: str) -> None:
    client = client_factory("uploader")
    answer = upload(client, calibration_text().encode())
    assert answer.status_code == 201, answer.text
    record = answer.json()
    assert record["item_count"] == 1
    assert record["id"].startswith("cal_")
    assert client.get(f"/v1/calibration-sets/{record['id']}").json() == record

    body = {
        "model": tiny_model,
        "calibration": {"set_id": record["id"]},
        "samples": 2,
        "seq_len": 16,
        "sparsities": [0.3],
    }
    assert client.post("/v1/jobs", json=body).status_code == 201
    wrong_objective = client.post("/v1/jobs", json=body | {"objective": "margin"})
    assert wrong_objective.status_code == 422
    assert wrong_objective.json()["error"]["field"] == "calibration.set_id"

    other = client_factory("not-the-uploader")
    assert other.get(f"/v1/calibration-sets/{record['id']}").status_code == 404
    foreign = other.post("/v1/jobs", json=body)
    assert foreign.status_code == 422
    assert foreign.json()["error"]["code"] == "unknown_calibration_set"


def test_fingerprint_is_sha256_of_stored_jsonl(client_factory, service_settings) -> None:
    from core.db.models import CalibrationSet
    from core.db.session import session_scope
    from core.storage import get_storage

    client = client_factory("fingerprint")
    lines = [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": "6"}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    record = upload(client, data, "answer", "qa.jsonl").json()
    assert record["item_count"] == 2
    with session_scope(service_settings) as session:
        key = session.get(CalibrationSet, record["id"]).storage_key
    assert key.endswith(f"/calibration/{record['id']}/data.jsonl")
    stored = get_storage(service_settings).get_bytes(key)
    assert hashlib.sha256(stored).hexdigest() == record["fingerprint"]


@pytest.mark.parametrize(
    ("objective", "lines", "field_prefix"),
    [
        ("margin", [{"prompt": "p", "choices": ["a", "b"]}], "file.items[0]"),
        ("margin", [{"prompt": "p", "choices": ["a", "b"], "label": 5}], "file.items[0]"),
        ("answer", [{"prompt": "p"}], "file.items[0]"),
        ("perplexity", [{"body": "x"}], "file.items[0]"),
    ],
)
def test_invalid_records_name_the_item(
    client_factory, objective: str, lines: list, field_prefix: str
) -> None:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    answer = upload(client_factory("bad-sets"), data, objective, "bad.jsonl")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"].startswith(field_prefix)


@pytest.mark.parametrize(
    ("data", "objective"),
    [(b"", "perplexity"), (b"\xff\xfe\x00", "perplexity"), (b"plain text", "margin"), (b"{broken", "answer")],
)
def test_unusable_files(client_factory, data: bytes, objective: str) -> None:
    answer = upload(client_factory("bad-sets"), data, objective)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "file"


def test_size_limit(app, make_key, service_settings) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    small = create_app(service_settings.model_copy(update={"max_upload_bytes": 100}))
    client = TestClient(small, headers={"Authorization": f"Bearer {make_key('big')}"})
    answer = upload(client, b"x" * 101)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert upload(client, b"tiny text").status_code == 201
    # Far too large: refused from its Content-Length, before the body is parsed.
    early = upload(client, b"x" * 200_000)
    assert early.status_code == 413
    assert early.json()["error"] == {
        "code": "payload_too_large",
        "message": "the upload exceeds 100 bytes",
        "field": "file",
    }


def test_missing_file_and_bad_objective(client_factory) -> None:
    client = client_factory("bad-sets")
    missing = client.post("/v1/calibration-sets", data={"objective": "perplexity"})
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "file"
    bad = upload(client, b"text", "nonsense")
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "objective"

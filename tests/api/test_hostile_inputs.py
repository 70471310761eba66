"""Hostile inputs that once reached PostgreSQL or the JSON parser raw: each is a 422 naming its field.

Every case here answered 500 before (PostgreSQL JSONB refuses NaN, Infinity and NUL; text columns refuse NUL;
``str.isdigit`` accepts '²'; bigint overflows; a naive timestamp failed at bind time; deep JSON nesting blew
the parser's recursion limit). They stay as explicit regression cases beside the property-based run.
"""

from __future__ import annotations

import base64
import copy
import json

import pytest

pytestmark = pytest.mark.services

BASE = {
    "model": {"id": "local/tiny"},
    "calibration": {"name": "wikitext2"},
    "samples": 4,
    "seq_len": 32,
    "sparsities": [0.2],
    "steps": 2,
}


@pytest.fixture(scope="module")
def client(client_factory, tiny_model: str):  # type: ignore[no-untyped-def]
    return client_factory("hostile")


@pytest.fixture(scope="module")
def job_id(client) -> str:  # type: ignore[no-untyped-def]
    answer = client.post("/v1/jobs", json=BASE)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _refused(answer, field: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == 422, (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert error["field"] == field, error
    assert error["message"]


def _raw_json(body: dict, **literals: str) -> bytes:
    """``body`` as JSON with placeholders replaced by raw tokens (NaN, Infinity) json.dumps would not write."""
    text = json.dumps(body)
    for name, token in literals.items():
        text = text.replace(f'"@{name}@"', token)
    return text.encode()


@pytest.mark.parametrize(
    ("metadata", "literal", "field"),
    [
        ({"score": "@v@"}, "NaN", "metadata.score"),
        ({"score": "@v@"}, "Infinity", "metadata.score"),
        ({"score": "@v@"}, "-Infinity", "metadata.score"),
        ({"note": "a\u0000b"}, None, "metadata.note"),
        ({"a\u0000b": "x"}, None, "metadata"),
        ({"a": {"b": "@v@"}}, "NaN", "metadata.a"),  # values are scalars: nothing nested reaches the database
        ({"a": ["\u0000"]}, None, "metadata.a"),
        ({"note": "@v@"}, '"\\ud800"', "metadata.note"),  # a lone surrogate: no UTF-8, no JSONB
        ({"@k@": 1}, None, "metadata"),
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "nul-in-value",
        "nul-in-key",
        "nested-nan",
        "nested-nul",
        "lone-surrogate-value",
        "lone-surrogate-key",
    ],
)
def test_metadata_postgresql_cannot_store(client, metadata: dict, literal: str | None, field: str) -> None:  # type: ignore[no-untyped-def]
    body = copy.deepcopy(BASE) | {"metadata": metadata}
    content = _raw_json(body, v=literal) if literal else json.dumps(body).encode()
    content = content.replace(b'"@k@"', b'"\\udfff"')
    answer = client.post("/v1/jobs", content=content, headers={"Content-Type": "application/json"})
    _refused(answer, field)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/jobs/job_0%00", "job_id"),
        ("/v1/jobs/job_0%00/events", "job_id"),
        ("/v1/calibration-sets/cal_0%00", "set_id"),
    ],
)
def test_nul_in_path_ids(client, path: str, field: str) -> None:  # type: ignore[no-untyped-def]
    _refused(client.get(path), field)


def test_nul_in_sparsity(client, job_id: str) -> None:  # type: ignore[no-untyped-def]
    _refused(client.get(f"/v1/jobs/{job_id}/checkpoints/0.2%00"), "sparsity")
    _refused(client.get(f"/v1/jobs/{job_id}/checkpoints/0.2%0A"), "sparsity")  # full match: no newline


def test_nul_in_upload_form_name(client) -> None:  # type: ignore[no-untyped-def]
    answer = client.post(
        "/v1/calibration-sets",
        files={"file": ("cal.txt", b"some calibration text\n")},
        data={"objective": "perplexity", "name": "mine\u0000"},
    )
    _refused(answer, "name")


@pytest.mark.parametrize(
    "cursor",
    ["\u00b2", "１２", str(2**63), "9" * 30],
    ids=["superscript-two", "fullwidth-digits", "bigint-overflow", "thirty-nines"],
)
def test_events_cursor_must_be_an_ascii_bigint(client, job_id: str, cursor: str) -> None:  # type: ignore[no-untyped-def]
    _refused(client.get(f"/v1/jobs/{job_id}/events", params={"cursor": cursor}), "cursor")


@pytest.mark.parametrize("value", ["\u00b2", str(2**63)], ids=["superscript-two", "bigint-overflow"])
def test_event_stream_resume_id_must_be_an_ascii_bigint(client, job_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    path = f"/v1/jobs/{job_id}/events/stream"
    _refused(client.get(path, params={"last_event_id": value}), "last_event_id")


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "raw",
    ["2026-01-01T00:00:00|job_0", "2026-01-01T00:00:00+00:00|job_0\u0000", "2026-01-01T00:00:00+00:00"],
    ids=["naive-timestamp", "trailing-nul", "no-id"],
)
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/calibration-sets"])
def test_list_cursors(client, job_id: str, path: str, raw: str) -> None:  # type: ignore[no-untyped-def]
    _refused(client.get(path, params={"cursor": _cursor(raw)}), "cursor")


def test_deeply_nested_jsonl_line(client) -> None:  # type: ignore[no-untyped-def]
    data = b"[" * 50_000 + b"\n"
    answer = client.post(
        "/v1/calibration-sets",
        files={"file": ("deep.jsonl", data)},
        data={"objective": "perplexity"},
    )
    _refused(answer, "file")
    assert "line 1" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [b'{"metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"model": "\xff\xfe"}'],
    ids=["nested", "not-utf8"],
)
def test_unparseable_job_body(client, content: bytes) -> None:  # type: ignore[no-untyped-def]
    answer = client.post("/v1/jobs", content=content, headers={"Content-Type": "application/json"})
    _refused(answer, "body")

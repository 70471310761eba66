"""Every invalid job request is a 422 that names the offending field; none is a 500."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.services

BASE = {
    "model": {"id": "local/tiny"},
    "calibration": {"name": "wikitext2"},
    "samples": 4,
    "seq_len": 32,
    "objective": "perplexity",
    "sparsities": [0.2, 0.4],
    "steps": 4,
}


def _with(path: str, value: object) -> dict:
    body = copy.deepcopy(BASE)
    target = body
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return body


_DELETE = object()

CASES = [
    (_with("model.id", "/etc/passwd"), "model.id"),
    (_with("model.id", "../secrets"), "model.id"),
    (_with("model.id", "local/../../etc"), "model.id"),
    (_with("model.id", "file:///etc/passwd"), "model.id"),
    (_with("model.id", "local/.."), "model.id"),
    (_with("model.id", "a/b/c"), "model.id"),
    (_with("model.id", "local/absent"), "model.id"),
    (_with("model.id", "org/hub-model"), "model.id"),  # hub models are disabled in tests
    (_with("model.revision", "../x"), "model.revision"),
    (_with("model", _DELETE), "model"),
    (_with("calibration", _DELETE), "calibration"),
    (_with("sparsities", []), "sparsities"),
    (_with("sparsities", [1.5]), "sparsities"),
    (_with("sparsities", [0.0]), "sparsities"),
    (_with("sparsities", [0.5, 0.5]), "sparsities"),
    (_with("sparsities", "half"), "sparsities"),
    (_with("sparsities", [1e-300]), "sparsities"),  # its checkpoint would be labelled 0.0000
    (_with("sparsities", [0.99999]), "sparsities"),  # ... or 1.0000
    (_with("sparsities", [0.20001, 0.20004]), "sparsities"),  # one label, 0.2000, for both
    (_with("steps", 0), "steps"),
    (_with("steps", 100000), "steps"),
    (_with("objective", "bogus"), "objective"),
    (_with("method", "bogus"), "method"),
    (_with("layout", "sideways"), "layout"),
    (_with("samples", 0), "samples"),
    (_with("seq_len", 2), "seq_len"),
    (_with("batch_size", 4), "batch_size"),  # a worker setting, not a job's
    (_with("calibration.samples", 4), "calibration.samples"),  # the calibration object names the data only
    (_with("reconstruction_samples", 0), "reconstruction_samples"),
    (_with("reconstruction", "sometimes"), "reconstruction"),
    (_with("score", "hessian"), "score"),
    (_with("calibration.name", "../../etc/passwd"), "calibration.name"),
    (_with("calibration.set_id", "cal_" + "0" * 32), "calibration"),  # both name and set_id
    (_with("calibration.name", "gsm8k"), "calibration.name"),  # answer set for a perplexity job
    (_with("calibration.name", "pyproject.toml"), "calibration.name"),  # not a set: never a file path
    (_with("protected_layers", [-1]), "protected_layers[0]"),
    (_with("evaluations", ["bad name!"]), "evaluations"),
    (_with("evaluations", ["perplexity", "no-such-task"]), "evaluations"),
    (_with("evaluations", ["perplexity", "perplexity"]), "evaluations"),
    (_with("experimental", {"normalization": "sideways"}), "experimental.normalization"),
    (_with("normalization", "reference"), "normalization"),  # experimental options live under experimental
    (_with("steps", _DELETE) | {"method": "wanda-sp", "score": "fisher"}, "score"),
    (_with("steps", _DELETE) | {"method": "flap", "bias_compensation": True}, "bias_compensation"),
    (_with("method", "wanda-sp"), "steps"),  # one-shot methods take one step
    (_with("score", "refit-fisher") | {"reconstruction": False}, "score"),
    (_with("reconstruction", False) | {"reconstruction_samples": 64}, "reconstruction_samples"),
    (_with("protected_layers", list(range(2000))), "protected_layers"),
    (_with("seed", -1), "seed"),
    (_with("metadata", {"blob": "x" * 10000}), "metadata.blob"),
    (_with("metadata", {k: "x" * 3000 for k in "abc"}), "metadata"),  # each fits, not all together
    (_with("metadata", {"k" * 200: 1}), "metadata"),
    (_with("metadata", {str(i): i for i in range(65)}), "metadata"),
    (_with("evaluations", ["x" * 100]), "evaluations[0]"),
    (_with("sparsities", [0.01 * i for i in range(1, 66)]), "sparsities"),
    (_with("surprise", 1), "surprise"),
]


@pytest.mark.parametrize(("body", "field"), CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_invalid_request_names_the_field(client_factory, tiny_model: str, body: dict, field: str) -> None:
    answer = client_factory("validator").post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field, error
    assert error["message"]


def test_unknown_calibration_set(client_factory, tiny_model: str) -> None:
    body = _with("calibration", {"set_id": "cal_" + "0" * 32})
    error = client_factory("validator").post("/v1/jobs", json=body).json()["error"]
    assert (error["field"], error["code"]) == ("calibration.set_id", "unknown_calibration_set")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"[]", "application/json"), (b"model=x", "text/plain")],
)
def test_malformed_bodies(client_factory, content: bytes, content_type: str) -> None:
    answer = client_factory("validator").post(
        "/v1/jobs", content=content, headers={"Content-Type": content_type}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] is not None


def test_idempotency_key_too_long(client_factory, tiny_model: str) -> None:
    answer = client_factory("validator").post("/v1/jobs", json=BASE, headers={"Idempotency-Key": "k" * 500})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "Idempotency-Key"


def test_bad_query_parameters(client_factory) -> None:
    client = client_factory("validator")
    for params, field in [
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": "x"}, "limit"),
    ]:
        answer = client.get("/v1/jobs", params=params)
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == field


def test_every_list_map_and_string_of_the_spec_is_bounded() -> None:
    """The published schema bounds every array, map and string, so no field can carry an unbounded payload."""
    from core.schemas.jobs import JobSpec

    schema = JobSpec.model_json_schema()
    definitions = schema.get("$defs", {})
    unbounded: list[str] = []

    def walk(node: object, path: str, seen: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                walk(definitions[name], path, seen | {name})
            return
        kind = node.get("type")
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "string" and not ({"maxLength", "enum", "const"} & set(node)):
            unbounded.append(path)
        open_map = kind == "object" and node.get("additionalProperties") not in (None, False)
        if open_map and ("maxProperties" not in node or "maxLength" not in node.get("propertyNames", {})):
            unbounded.append(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}", seen)
        for key in ("items", "additionalProperties"):
            walk(node.get(key), f"{path}[{key}]", seen)
        for child in node.get("anyOf", []) + node.get("allOf", []):
            walk(child, path, seen)

    walk(schema, "JobSpec", frozenset())
    assert unbounded == []

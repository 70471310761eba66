"""``GET /select?verify=true`` with a real Celery worker: the choice re-measured, stepping back until it holds.

Every re-measured figure is checked against an independent computation: the checkpoint downloaded through
the API, loaded on its own and measured here on the same WikiText-2 windows.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.curve_seed import write_curve
from tests.worker.conftest import wait_for_job

pytestmark = pytest.mark.services

TERMINAL = {"succeeded", "failed", "cancelled"}
WINDOWS = 4
REL = 1e-4  # the worker and this test measure the same model the same way: float noise only


def _answer(client: httpx.Client, job_id: str, **params: Any) -> tuple[dict, httpx.Response]:
    """The answer once the worker has measured (polling through the 202s); asserts the first was a 202."""
    first = client.get(f"/v1/jobs/{job_id}/select", params={**params, "verify": "true"})
    assert first.status_code == 202, first.text
    assert int(first.headers["retry-after"]) > 0
    pending = first.json()

    def settled() -> httpx.Response | None:
        answer = client.get(f"/v1/jobs/{job_id}/select", params={**params, "verify": "true"})
        return None if answer.status_code == 202 else answer

    answer: Any = wait_until(settled, timeout=120, interval=0.2, what="the re-measured selection")
    assert answer is not None
    return pending, answer


def _downloaded_perplexity(client: httpx.Client, job_id: str, label: str, data_dir: Path, tmp: Path) -> float:
    """Download the checkpoint at ``label`` (materialised on demand) and measure it here, on its own."""
    from transformers import AutoTokenizer

    from core.data.text import wikitext2_text
    from core.engine.modeling.modeling_gisp import GispForCausalLM
    from core.eval.perplexity import perplexity_of_ids, tokenize_text, windows_of

    def ready() -> httpx.Response | None:
        response = client.get(f"/v1/jobs/{job_id}/checkpoints/{label}")
        assert response.status_code in (200, 202), response.text
        return response if response.status_code == 200 else None

    archive: Any = wait_until(ready, timeout=120, interval=0.2, what=f"checkpoint {label}")
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(tmp / label, filter="data")
        (root,) = {Path(name).parts[0] for name in tar.getnames()}
    folder = tmp / label / root
    model = GispForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = windows_of(tokenize_text(tokenizer, wikitext2_text("test", data_dir)), 128)[:WINDOWS].reshape(-1)
    return perplexity_of_ids(model, ids).perplexity


@pytest.fixture(scope="module")
def measured_job(worker_process, client_factory, tiny_model: str) -> tuple[httpx.Client, str, dict]:  # type: ignore[no-untyped-def]
    if worker_process.process is None or worker_process.process.poll() is not None:
        worker_process.start()
    client = client_factory("verify-owner")
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 2,
        "seq_len": 16,
        "reconstruction_samples": 8,
        "sparsities": [0.6],
        "steps": 6,
        "curve": {"points": 7, "perplexity_windows": WINDOWS},
    }
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    done = wait_for_job(client, job_id, lambda j: j["status"] in TERMINAL, timeout=300)
    assert done["status"] == "succeeded", done
    curve = client.get(f"/v1/jobs/{job_id}/curve").json()
    return client, job_id, curve


def _bound_with_a_next_point(curve: dict) -> tuple[float, int]:
    """A perplexity bound the curve's rule answers with a point that has a next one, and that point's index:
    the most pruned point whose perplexity is below every later point's (the rule picks exactly it)."""
    points = sorted(curve["points"], key=lambda p: p["sparsity"])
    values = [p["perplexity"] for p in points]
    for index in range(len(points) - 2, -1, -1):
        later = min(values[index + 1 :])
        if values[index] < later:
            return min(values[index] * (1 + 10 * REL), (values[index] + later) / 2), index
    raise AssertionError(f"every point is beaten by the last one on this curve: {values}")


def test_the_verified_point_holds_when_re_measured_and_the_next_point_does_not(
    measured_job, service_dirs, tmp_path: Path
) -> None:
    client, job_id, curve = measured_job
    points = sorted(curve["points"], key=lambda p: p["sparsity"])
    bound, index = _bound_with_a_next_point(curve)
    chosen, following = points[index], points[index + 1]

    pending, answer = _answer(client, job_id, max_perplexity=bound)
    assert answer.status_code == 200, answer.text
    assert pending["curve_choice"] == chosen["label"] and pending["candidates"][0] == chosen["label"]
    body = answer.json()
    assert body["label"] == chosen["label"]
    (tried,) = body["verification"]["tried"]  # the curve's choice held: no step back
    assert tried["meets"] and tried["curve"]["perplexity"] == chosen["perplexity"]
    assert tried["measured"]["perplexity"] == pytest.approx(chosen["perplexity"], rel=REL)
    assert body["figures"] == tried["measured"]
    assert body["verification"]["evaluation"]["perplexity"]["windows"] == WINDOWS
    assert "verified by re-measuring" in body["rule"]

    # Independently: the verified checkpoint, downloaded and measured here, meets the bound; the next point
    # along the trajectory does not.
    data = service_dirs["data"]
    assert _downloaded_perplexity(client, job_id, chosen["label"], data, tmp_path) <= bound
    assert _downloaded_perplexity(client, job_id, following["label"], data, tmp_path) > bound

    # Asked again: answered from the stored outcome, at once.
    again = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": bound, "verify": "true"})
    assert again.status_code == 200 and again.json() == body


def test_a_point_the_curve_overrates_is_stepped_back_from(measured_job, service_settings) -> None:
    client, job_id, curve = measured_job
    points = sorted(curve["points"], key=lambda p: p["sparsity"])
    bound, index = _bound_with_a_next_point(curve)
    chosen, following = points[index], points[index + 1]
    # The curve now claims the next point meets the bound; measured again, it does not.
    overrated = {**following, "perplexity": bound / 2}
    write_curve(
        service_settings,
        job_id,
        {**curve, "points": [overrated if p["label"] == following["label"] else p for p in curve["points"]]},
    )
    plain = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": bound}).json()
    assert plain["label"] == following["label"]  # the measured curve alone is fooled

    pending, answer = _answer(client, job_id, max_perplexity=bound)
    assert answer.status_code == 200, answer.text
    assert pending["candidates"][:2] == [following["label"], chosen["label"]]
    body = answer.json()
    assert body["label"] == chosen["label"]
    assert body["verification"]["curve_choice"] == following["label"]
    first, second = body["verification"]["tried"]
    assert (first["label"], first["meets"], second["label"], second["meets"]) == (
        following["label"],
        False,
        chosen["label"],
        True,
    )
    assert first["curve"]["perplexity"] == bound / 2
    assert first["measured"]["perplexity"] == pytest.approx(following["perplexity"], rel=REL)
    assert first["measured"]["perplexity"] > bound
    assert second["measured"]["perplexity"] <= bound
    assert f"1 step back from {following['label']}" in body["rule"]
    assert body["download_url"].endswith(f"/checkpoints/{chosen['label']}")
    write_curve(service_settings, job_id, curve)


def test_a_bound_no_point_meets_once_re_measured_has_its_own_error(measured_job, service_settings) -> None:
    client, job_id, curve = measured_job
    lowest = min(p["perplexity"] for p in curve["points"])
    bound = lowest * 0.5  # below every real figure
    flattered = {**curve, "points": [{**p, "perplexity": bound * 0.9} for p in curve["points"]]}
    write_curve(service_settings, job_id, flattered)
    try:
        _, answer = _answer(client, job_id, max_perplexity=bound)
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["code"] == "no_point_verified" and error["field"] == "max_perplexity"
        labels = [p["label"] for p in sorted(curve["points"], key=lambda p: -p["sparsity"])]
        assert f"tried {', '.join(labels)}" in error["message"]  # every point, most pruned first
        best = min(curve["points"], key=lambda p: p["perplexity"])
        assert f"closest is sparsity {best['label']}" in error["message"]

        # A bound nothing on the curve meets is refused before any measuring, as without verify.
        nothing = client.get(
            f"/v1/jobs/{job_id}/select", params={"max_perplexity": bound * 0.1, "verify": "true"}
        )
        assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "no_point_qualifies"
    finally:
        write_curve(service_settings, job_id, curve)


def test_verification_is_tenant_isolated(measured_job, client_factory) -> None:
    _, job_id, _ = measured_job
    intruder = client_factory("verify-intruder")
    answer = intruder.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": 1e9, "verify": "true"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_the_command_line_waits_for_the_verified_point_and_downloads_it(
    measured_job, live_server, make_key, tmp_path: Path
) -> None:
    from tests.api.test_client_cli import gisp

    _, job_id, curve = measured_job
    points = sorted(curve["points"], key=lambda p: p["sparsity"])
    bound, index = _bound_with_a_next_point(curve)
    bound = (bound + points[index]["perplexity"]) / 2  # the same choice, a question not asked before
    args = ("jobs", "select", job_id, "--max-perplexity", repr(bound), "--verify")
    result = gisp(*args, "--download", str(tmp_path), "--url", live_server(), key=make_key("verify-owner"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    label = points[index]["label"]
    assert lines[0].startswith(f"{label}  parameters") and "verified by re-measuring" in lines[0]
    assert lines[1].startswith(f"  {label}  perplexity curve") and lines[1].endswith("meets")
    assert (Path(lines[-1]) / "gisp_manifest.json").is_file()

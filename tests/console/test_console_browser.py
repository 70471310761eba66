"""The web console in headless Chromium against a real embedded server and worker."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from tests.console.conftest import sign_in, tar_members
from tests.console.embedded import EmbeddedServer
from tests.curve_seed import read_report

pytestmark = pytest.mark.services


def test_submit_follow_select_download(page, embedded: EmbeddedServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, embedded)
    page.get_by_role("navigation").get_by_role("link", name="New job").click()
    page.get_by_role("heading", name="New pruning job").wait_for()
    page.locator("select[name=model] option[value='local/tiny']").wait_for(state="attached")
    page.get_by_label("Local model").select_option("local/tiny")
    page.locator("select[name=calibration] option[value='name:wikitext2']").wait_for(state="attached")
    page.get_by_label("Calibration set").select_option("name:wikitext2")
    page.get_by_label("Samples").fill("2")
    page.get_by_label("Sequence length").fill("16")
    page.get_by_label("Steps").fill("5")
    page.get_by_label("Evaluations").fill("perplexity")
    page.get_by_label("Curve points").fill("4")

    # A bad sparsity: the API's 422 appears beside the sparsities field and marks it invalid.
    sparsities = page.get_by_label("Target sparsities")
    sparsities.fill("0.2, 1.5")
    page.get_by_role("button", name="Submit job").click()
    error = page.locator(".field:has(input[name=sparsities]) .field-error")
    error.wait_for()
    assert "sparsities" in error.inner_text()
    assert sparsities.get_attribute("aria-invalid") == "true"
    assert page.get_by_role("heading", name="New pruning job").is_visible()  # nothing was submitted

    sparsities.fill("0.2, 0.4")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"#/jobs/job_"))
    job_id = page.url.rsplit("/", 1)[1]

    # Progress reaches 100 % through the event stream: the job itself is fetched only at the start and end.
    page.locator("#job-progress-label[data-percent='100']").wait_for(timeout=180_000)
    assert page.locator("#job-progress").evaluate("e => e.value") == 100
    assert any(u.endswith(f"/v1/jobs/{job_id}/events/stream") for u in requests)
    assert sum(u.endswith(f"/v1/jobs/{job_id}") for u in requests) <= 2
    page.locator(".badge.status-succeeded").first.wait_for(timeout=180_000)
    assert page.locator(".chart-box canvas").first.is_visible()  # the loss-vs-sparsity chart

    # The worker measured the curve the form asked for; the page draws it from the stored report.
    report = read_report(embedded.settings(), job_id)
    assert report is not None and report["evaluation"]["results"], report
    curve = report["curve"]
    assert len(curve["points"]) >= 3 and curve["dense"]  # 3 grid points and the 0.2 target
    page.locator(".chart-box[data-metric=perplexity] canvas").wait_for()
    page.get_by_role("radio", name="Parameters").check()  # the same metric against parameters
    page.locator(".chart-box[data-metric=perplexity] .u-title", has_text="against parameters").wait_for()

    # Select by a perplexity bound; the expected point is computed here from the rule's wording.
    bound = sorted(p["perplexity"] for p in curve["points"])[0] * 1.0001
    expected = max((p for p in curve["points"] if p["perplexity"] <= bound), key=lambda p: p["sparsity"])
    page.get_by_label("Max perplexity").fill(f"{bound:.6f}")
    page.get_by_role("button", name="Select by constraint").click()
    page.get_by_text("Selected: the most pruned point with perplexity").wait_for()
    assert page.locator("dd[data-figure=Sparsity]").inner_text() == expected["label"]
    page.locator(".chart-box[data-chart=heads] canvas").wait_for()  # per-layer sizes of the choice
    page.locator(".chart-box[data-chart=channels] canvas").wait_for()

    # A bad bound shows the API's 422 beside its field.
    page.get_by_label("Max perplexity").fill("-1")
    page.get_by_role("button", name="Select by constraint").click()
    assert "above 0" in page.locator(".bounds .field-error").inner_text()
    page.get_by_label("Max perplexity").fill("")

    # The slider moves through the trajectory with the keyboard.
    slider = page.get_by_label("Sparsity on the trajectory")
    before = page.locator(".pick-value").inner_text()
    slider.focus()
    page.keyboard.press("Home")
    assert page.locator(".pick-value").inner_text() != before
    slider.focus()
    page.keyboard.press("End")
    page.get_by_label("Max perplexity").fill(f"{bound:.6f}")
    page.get_by_role("button", name="Select by constraint").click()
    page.get_by_text("Selected: the most pruned point").wait_for()

    with page.expect_download(timeout=120_000) as download_info:
        page.get_by_role("button", name=f"Download checkpoint {expected['label']}").click()
    saved = tmp_path / "checkpoint.tar"
    download_info.value.save_as(saved)
    files = tar_members(saved)
    assert {"config.json", "model.safetensors", "gisp_manifest.json"} <= set(files)
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(files[name]).hexdigest() == digest, name

    # Usable on a narrow screen: nothing wider than the viewport.
    page.set_viewport_size({"width": 400, "height": 800})
    # The charts' ResizeObserver redraws them at the new width in the next rendering step: read the width two
    # animation frames later (the console's CSP forbids wait_for_function; evaluate's promise is allowed).
    assert page.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() =>"
        " done(document.documentElement.scrollWidth <= window.innerWidth + 1))))"
    )

    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    assert page.outside == [], page.outside  # type: ignore[attr-defined]


def test_another_tenants_job_is_not_found(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    other_key = embedded.create_key("someone-else")
    body = {"model": "local/tiny", "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2}
    created = httpx.post(
        f"{embedded.url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {other_key}"}
    )
    assert created.status_code == 201, created.text
    other_id = created.json()["id"]
    httpx.post(f"{embedded.url}/v1/jobs/{other_id}/cancel", headers={"Authorization": f"Bearer {other_key}"})

    sign_in(page, embedded)
    assert page.locator(f"tr[data-job-id='{other_id}']").count() == 0
    page.goto(f"{embedded.url}/#/jobs/{other_id}")
    page.get_by_role("heading", name="Job not found").wait_for()
    assert other_id in page.locator("main").inner_text()


def test_sign_in_refuses_a_bad_key_and_keeps_the_key_in_the_tab(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(embedded.url + "/")
    page.get_by_label("API key").fill("gisp_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.locator(".field-error").inner_text()
    sign_in(page, embedded)
    stored = page.evaluate("[sessionStorage.getItem('gisp.apiKey'), localStorage.length, document.cookie]")
    assert stored == [embedded.key, 0, ""]
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert page.evaluate("sessionStorage.getItem('gisp.apiKey')") is None


def test_api_docs_load_offline(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{embedded.url}/v1/docs")
    page.locator(".swagger-ui .info .title", has_text="GISP service").wait_for()
    page.locator(".opblock-summary-path", has_text="/v1/jobs/{job_id}/select").first.wait_for()
    assert page.outside == [], page.outside  # type: ignore[attr-defined]


def test_every_input_has_a_label(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, embedded)
    for route in ("#/submit", "#/signin"):
        page.goto(f"{embedded.url}/{route}")
        page.locator("main form").wait_for()
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('main input, main select, main textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.name || el.id)"""
        )
        assert unlabelled == [], (route, unlabelled)


def test_an_upload_error_shows_beside_the_file_input(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, embedded)
    page.goto(f"{embedded.url}/#/submit")
    page.locator("select[name=model] option[value='local/tiny']").wait_for(state="attached")
    page.get_by_label("Objective").select_option("margin")
    # A margin set needs JSONL records with a label that points at a choice: the API refuses this one.
    bad = b'{"prompt": "2+2=", "choices": ["4", "5"], "label": 7}\n'
    page.get_by_label("…or upload a file").set_input_files(
        {"name": "bad.jsonl", "mimeType": "application/jsonl", "buffer": bad}
    )
    page.get_by_role("button", name="Submit job").click()
    error = page.locator(".field:has(input[type=file]) .field-error")
    error.wait_for()
    assert "label 7" in error.inner_text()
    assert page.get_by_role("heading", name="New pruning job").is_visible()


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""
    linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURS_JS = """(selector) => [...document.querySelectorAll(selector)].filter(e => e.offsetParent).map(e => {
    const rgb = s => s.match(/[\\d.]+/g).slice(0, 4).map(Number);
    let bg = e, colour = rgb(getComputedStyle(e).backgroundColor);
    while ((colour.length === 4 && colour[3] === 0) && bg.parentElement) {
        bg = bg.parentElement; colour = rgb(getComputedStyle(bg).backgroundColor);
    }
    return [e.textContent.trim().slice(0, 30), rgb(getComputedStyle(e).color).slice(0, 3), colour.slice(0, 3)];
})"""


def test_text_has_sufficient_contrast(page, embedded: EmbeddedServer) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, embedded)
    page.goto(f"{embedded.url}/#/submit")
    page.locator("select[name=model] option[value='local/tiny']").wait_for(state="attached")
    page.get_by_label("Target sparsities").fill("2")
    page.get_by_role("button", name="Submit job").click()
    page.locator(".field-error").wait_for()
    checked = 0
    for selector in (
        "main label",
        "main legend",
        ".hint",
        ".field-error",
        "main button",
        "header a",
        "main h1",
    ):
        for text, fg, bg in page.evaluate(COLOURS_JS, selector):
            ratio = _contrast(tuple(fg), tuple(bg))
            assert ratio >= 4.5, (selector, text, fg, bg, round(ratio, 2))  # WCAG AA for normal text
            checked += 1
    assert checked >= 15

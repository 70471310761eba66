"""Screenshots of the web console for the docs: a tiny job on the embedded server, its page and its curve.

    .venv/bin/python scripts/console_screenshots.py            # writes docs/console-job.png, docs/console-curve.png

Starts ``gisp serve --embedded`` (SQLite, local storage, a real worker) in a temporary folder with a tiny random
Llama, runs a job with a perplexity evaluation, and drives headless Chromium (Debian's /usr/bin/chromium).
The worker does not write a curve into its report yet, so the script adds one made of the report's own
evaluation numbers, as the worker's report step will.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.cli.client import ServiceClient  # noqa: E402
from tests.conftest import CORPUS, build_tiny_model  # noqa: E402
from tests.console.embedded import CHROMIUM, CHROMIUM_ARGS, EmbeddedServer  # noqa: E402
from tests.curve_seed import curve_from_report, read_report, write_curve  # noqa: E402


def stand_in_wikitext(data_dir: Path) -> None:
    """Small WikiText-2-shaped files: validation for calibration, test for the perplexity evaluation."""
    articles = [
        f" = Article {i} = \n\n " + " ".join(CORPUS[i % 4 :] + CORPUS[: i % 4]) + " \n" for i in range(8)
    ]
    (data_dir / "wikitext-2").mkdir(parents=True, exist_ok=True)
    (data_dir / "wikitext-2" / "wiki.valid.tokens").write_text("\n".join(articles), encoding="utf-8")
    (data_dir / "wikitext-2-raw").mkdir(parents=True, exist_ok=True)
    (data_dir / "wikitext-2-raw" / "wiki.test.raw").write_text(
        "\n".join(reversed(articles)), encoding="utf-8"
    )


def run_job(server: EmbeddedServer) -> str:
    client = ServiceClient(server.url, server.key)
    job = client.submit(
        {
            "model": "local/tiny",
            "calibration": {"name": "wikitext2"},
            "samples": 4,
            "seq_len": 32,
            "sparsities": [0.2, 0.3, 0.4, 0.5],
            "steps": 10,
            "evaluations": ["perplexity"],
        }
    )
    done = client.wait(job["id"], timeout=900)
    if done["status"] != "succeeded":
        raise SystemExit(f"error: the job ended {done['status']}: {done.get('error')}")
    report = read_report(server.settings(), job["id"])
    if report is None:
        raise SystemExit("error: the finished job has no report")
    if not report.get("curve"):
        write_curve(server.settings(), job["id"], curve_from_report(report))
    return job["id"]


def shoot(server: EmbeddedServer, job_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
        page.goto(server.url + "/")
        page.get_by_label("API key").fill(server.key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Jobs").wait_for()
        page.goto(f"{server.url}/#/jobs/{job_id}")
        page.locator("#job-progress-label[data-percent='100']").wait_for(timeout=60_000)
        page.locator(".chart-box[data-metric=perplexity] canvas").wait_for(timeout=60_000)
        page.locator(".chart-box[data-chart=channels] canvas").wait_for(timeout=60_000)
        page.screenshot(path=str(out / "console-job.png"))

        curve = read_report(server.settings(), job_id)["curve"]  # type: ignore[index]
        middle = sorted(p["perplexity"] for p in curve["points"])[len(curve["points"]) // 2]
        page.get_by_label("Max perplexity").fill(f"{middle * 1.0001:.6g}")
        page.get_by_role("button", name="Select by constraint").click()
        page.get_by_text("Selected: the most pruned point").wait_for()
        page.locator(".chart-box[data-chart=channels] canvas").wait_for()
        page.locator(".results").screenshot(path=str(out / "console-curve.png"))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNG files")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gisp-shots-") as tmp:
        root = Path(tmp)
        build_tiny_model(root / "models" / "tiny")
        stand_in_wikitext(root / "data")
        server = EmbeddedServer(models_dir=root / "models", data_dir=root / "data", state_dir=root / "state")
        print(server.start(), flush=True)
        try:
            job_id = run_job(server)
            shoot(server, job_id, args.out)
        except Exception:
            print(server.log(), file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"wrote {args.out / 'console-job.png'} and {args.out / 'console-curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The console and docs ship with the package, load nothing from a CDN, and the new API code needs no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "api" / "static"


def test_every_static_file_is_package_data() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "api"
    ]
    shipped = {path for pattern in patterns for path in (REPO / "api").glob(pattern) if path.is_file()}
    present = {path for path in STATIC.rglob("*") if path.is_file()}
    assert present - shipped == set(), sorted(str(p.relative_to(REPO)) for p in present - shipped)


def _app():  # type: ignore[no-untyped-def]
    from api.main import create_app
    from core.settings import Settings

    return create_app(Settings())


def test_console_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    client = TestClient(_app())
    page = client.get("/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert len(assets) >= 4
    modules = [p.relative_to(STATIC).as_posix() for p in (STATIC / "console" / "js").rglob("*.js")]
    for path in assets + [f"/static/{m}" for m in modules]:
        assert client.get(path).status_code == 200, path
    # Each relative import of a module names a file that exists.
    for module in (STATIC / "console" / "js").rglob("*.js"):
        for target in re.findall(r'from "(\.[^"]+)"', module.read_text()):
            assert (module.parent / target).resolve().is_file(), (module, target)


def test_docs_use_local_assets_only() -> None:
    docs = TestClient(_app()).get("/v1/docs")
    assert docs.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert urls and all(u.startswith("/static/vendor/swagger-ui/") for u in urls), urls
    assert "cdn" not in docs.text.lower()


def test_catalog_and_selection_code_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import api.routes.catalog, api.routes.curve, api.routes.events_stream, api.routes.console\n"
        "from core.jobs.catalog import local_models, available_named_sets\n"
        f"local_models(Path({str(REPO / 'tests')!r})); available_named_sets(Path({str(tmp_path)!r}))\n"
        "bad = [m for m in ('torch', 'transformers', 'safetensors', 'core.engine.structures') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr

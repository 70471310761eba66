"""A real embedded server with a real worker, and headless Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.embedded import CHROMIUM, CHROMIUM_ARGS, EmbeddedServer
from tests.worker.conftest import named_sets  # noqa: F401  (the stand-in WikiText-2 files)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, service_dirs, tiny_model: str, named_sets) -> Iterator[EmbeddedServer]:  # type: ignore[no-untyped-def]  # noqa: F811
    server = EmbeddedServer(
        models_dir=service_dirs["models"],
        data_dir=service_dirs["data"],
        state_dir=tmp_path_factory.mktemp("console") / "state",
        step_delay_s=0.3,  # a few visible steps of progress
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Chromium comes from Debian (`make setup` installs it when root); a missing browser fails the tests.
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: run `make setup` as root or `apt-get install -y chromium`"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, embedded: EmbeddedServer) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A fresh page that may reach only the server under test; console errors are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.outside = []  # type: ignore[attr-defined]
    # Chromium logs every 4xx answer as an error; those the tests provoke on purpose are not failures.
    expected = "Failed to load resource: the server responded with a status of 4"
    page.on(
        "console",
        lambda m: (
            page.errors.append(m.text) if m.type == "error" and not m.text.startswith(expected) else None
        ),
    )
    page.on("pageerror", lambda e: page.errors.append(str(e)))

    def gate(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(embedded.url) or route.request.url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    try:
        yield page
    finally:
        context.close()


def sign_in(page, embedded: EmbeddedServer, key: str | None = None) -> None:  # type: ignore[no-untyped-def]
    page.goto(embedded.url + "/")
    page.get_by_label("API key").fill(key or embedded.key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Jobs").wait_for()


def tar_members(path: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]

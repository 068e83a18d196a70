"""A real server on a free loopback port and Debian's Chromium, headless, cut off from the internet."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import servers
from playwright.sync_api import Browser, expect
from servers import clean_env

from web.browser import OfflinePage

# A 2-core CI machine also starts Ray and traces models: be patient, never flaky.
expect.set_options(timeout=30_000)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    """Debian's Chromium (Playwright's own download cannot work offline); CI must have it."""
    path = os.environ.get("MB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: make test installs it (scripts/install_system_deps.sh)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@contextmanager
def running_server(folder: Path, **settings: str) -> Iterator[str]:
    """The app under uvicorn in its own process, jobs kept in ``folder``; yields its base URL.

    ``settings`` are MB_* variables; those of the calling environment are left out.
    """
    env = clean_env(("MB_",), MB_DATA_DIR=str(folder / "data"))
    env |= {f"MB_{k.upper()}": v for k, v in settings.items()}
    with servers.running_server(env, log=folder / "uvicorn.log") as (url, _):
        yield url


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Chromium, for this package's tests only: Playwright's sync API keeps an event loop running
    in the thread until it stops, and a test elsewhere (``asyncio.run``) may run after these in
    the same process (``make test`` runs the files in two processes, in any order)."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def offline_page(browser: Browser, server: str) -> Iterator[OfflinePage]:
    page = OfflinePage(browser, server)
    yield page
    page.context.close()

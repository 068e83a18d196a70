"""The playground against a server that requires an API key (MB_API_KEYS), as deployed by compose."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from web.browser import OfflinePage
from web.conftest import running_server

KEY = "playground-test-key"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("locked"), api_keys=json.dumps([KEY])) as url:
        yield url


def test_the_playground_asks_for_the_key_then_works_with_it(browser: Browser, locked_server: str) -> None:
    offline_page = OfflinePage(browser, locked_server)
    page = offline_page.page
    try:
        page.goto("/")
        expect(page.locator("#summary-status")).to_contain_text("needs an API key")
        expect(page.locator("#api-key")).to_be_focused()

        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")  # `change`: stored for the tab, page reloaded
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#summary tbody tr")).to_have_count(4)  # the seed example, summarised

        # The event stream is read with fetch, so it carries the key too.
        page.select_option("#example", "lenet_digits")
        page.fill('#train-form [name="epochs"]', "1")
        page.click("#train")
        expect(page.locator("#train-status")).to_contain_text("succeeded", timeout=180_000)
        expect(page.locator("#chart")).to_have_attribute("data-live-points", "1")
        assert offline_page.outside == [] and offline_page.page_errors == []
    finally:
        offline_page.context.close()

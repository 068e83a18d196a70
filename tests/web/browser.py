"""A browser page that may talk only to the server under test, with screenshots as artifacts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Locator, Route

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


class OfflinePage:
    """A page whose requests may only go to the server; anything else is aborted and recorded."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1000})
        self.outside: list[str] = []  # requests refused because they left the server
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []  # uncaught exceptions
        origin = urlsplit(base_url).netloc
        self.context.route("**/*", lambda route: self._only_local(route, origin))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def _only_local(self, route: Route, origin: str) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == origin:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def screenshot(self, name: str, element: Locator | None = None) -> None:
        """Saves artifacts/NAME.png: the whole page, or one element of it."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = str(ARTIFACTS / f"{name}.png")
        if element is None:
            self.page.screenshot(path=path, full_page=True)
        else:
            element.screenshot(path=path)

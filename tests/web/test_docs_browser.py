"""Swagger UI and ReDoc in a real Chromium with every request outside the server refused."""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import expect

from app.examples import SUMMARY_EXAMPLES
from web.browser import OfflinePage

SUMMARY_OP = "#operations-models-model_summary_v1_models_summary_post"


def test_swagger_ui_try_it_out_runs_every_summary_example(offline_page: OfflinePage, server: str) -> None:
    page = offline_page.page
    page.goto("/docs")
    op = page.locator(SUMMARY_OP)
    op.locator(".opblock-summary").click()
    op.get_by_role("button", name="Try it out").click()

    examples = op.locator("select.examples-select-element")
    labels = [example["summary"] for example in SUMMARY_EXAMPLES.values()]
    expect(examples.locator("option")).to_have_text(labels)

    for name, example in SUMMARY_EXAMPLES.items():
        examples.select_option(label=example["summary"])
        op.get_by_role("button", name="Execute").click()
        response = op.locator(".live-responses-table .response")
        expect(response.locator(".response-col_status")).to_have_text("200", timeout=30_000)
        shown = json.loads(response.locator(".response-col_description pre").first.inner_text())
        direct = httpx.post(f"{server}/v1/models/summary", json=example["value"], timeout=30).json()
        assert shown == direct, name
        if name == "seed":
            offline_page.screenshot("docs-swagger-ui", op)
        op.get_by_role("button", name="Clear").click()

    assert offline_page.outside == []
    assert offline_page.page_errors == []


def test_redoc_renders_the_summary_endpoint_and_its_examples(offline_page: OfflinePage) -> None:
    page = offline_page.page
    page.goto("/redoc")
    expect(page.get_by_role("heading", name="Model Summary")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(SUMMARY_EXAMPLES["seed"]["summary"]).first).to_be_attached()
    offline_page.screenshot("docs-redoc")
    # ReDoc's sidebar links its vendor logo from a CDN: the page's CSP refuses it in the browser,
    # so it is never requested from the network.
    assert offline_page.outside == []
    assert offline_page.page_errors == []

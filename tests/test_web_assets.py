"""The docs and the playground reference only assets this package serves (no CDN), unmodified."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from app.api.routes.docs import STATIC_DIR
from app.main import app

client = TestClient(app)
VENDOR = STATIC_DIR / "vendor"


def _referenced_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)


def test_vendored_files_match_their_recorded_checksums() -> None:
    recorded = dict(
        (path.removeprefix("./"), digest)
        for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", (VENDOR / "VENDORED.md").read_text(), re.M)
    )
    on_disk = {
        str(p.relative_to(VENDOR)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in VENDOR.rglob("*")
        if p.is_file() and p.name != "VENDORED.md"
    }
    assert recorded == on_disk


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/"])
def test_pages_load_nothing_from_outside(page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _referenced_urls(response.text)
    assert urls, "the page references its assets"
    for url in urls:
        assert not re.match(r"^(https?:)?//", url), f"{page} loads {url} from outside"
    # Every referenced asset is really served, with the right type.
    for url in urls:
        if url.endswith((".js", ".css", ".png")):
            asset = client.get(url if url.startswith("/") else f"/{url}")
            assert asset.status_code == 200, url
            kind = {"js": "javascript", "css": "text/css", "png": "image/png"}[url.rsplit(".", 1)[1]]
            assert kind in asset.headers["content-type"], url


def test_playground_modules_exist_and_import_only_local_modules() -> None:
    for name in ["app.js", "api.js", "forms.js", "summary.js"]:
        response = client.get(f"/static/playground/{name}")
        assert response.status_code == 200
        for target in re.findall(r"""^import .* from ['"]([^'"]+)['"]""", response.text, re.M):
            assert target.startswith("./"), f"{name} imports {target}"
            assert (STATIC_DIR / "playground" / target[2:]).is_file()


def test_summary_examples_are_in_the_openapi_document() -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/models/summary"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert {"seed", "small_cnn", "lenet_digits", "lstm"} <= set(examples)
    for example in examples.values():
        assert client.post("/v1/models/summary", json=example["value"]).status_code == 200


def test_docs_routes_are_not_in_the_schema() -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)

"""Uploaded datasets: each format, made here from scikit-learn's digits and wine, described as
numpy computes it; one dataset per content; owned per key; the limits, the store's records and
the files on disk kept in step. The app runs with a real job store and no Ray (none is needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import settings
from app.core.security import APILock
from app.main import app
from tests import dataset_files as make
from tests.dataset_files import URL, stored_files, upload


def expected_array(name: str, values: np.ndarray, dtype: str | None = None) -> dict:
    """The description numpy gives of ``values``."""
    classes = None
    if values.ndim == 1 and np.all(values == np.round(values)) and values.min() >= 0:
        labels, counts = np.unique(values, return_counts=True)
        classes = [
            {"value": int(v), "count": int(c), "name": None} for v, c in zip(labels, counts, strict=True)
        ]
    return {
        "name": name,
        "shape": list(values.shape),
        "dtype": dtype or values.dtype.name,
        "min": pytest.approx(float(values.min())),
        "max": pytest.approx(float(values.max())),
        "mean": pytest.approx(float(values.mean(dtype=np.float64))),
        "classes": classes,
    }


@pytest.mark.parametrize("kind", list(make.FORMATS))
def test_each_format_is_described_as_numpy_sees_it(
    datasets_api: TestClient, datasets_dir: Path, kind: str
) -> None:
    data, arrays = make.FORMATS[kind]()
    response = upload(datasets_api, data, f"digits.{kind}")
    assert response.status_code == 201, response.text
    body = response.json()
    sha = hashlib.sha256(data).hexdigest()
    assert body["id"] == body["sha256"] == sha and body["size_bytes"] == len(data)
    assert body["format"] == kind.removesuffix("_compressed") and body["images"] is None
    assert body["samples"] == len(next(iter(arrays.values())))
    # A CSV has no types: whole-number columns read as int64, the others as float64.
    whole = {name: "int64" if np.all(v == np.round(v)) else "float64" for name, v in arrays.items()}
    expected = [expected_array(n, v, whole[n] if kind == "csv" else None) for n, v in arrays.items()]
    assert sorted(body["arrays"], key=lambda a: a["name"]) == sorted(expected, key=lambda a: a["name"])
    assert response.headers["location"] == f"{URL}/{sha}"
    assert datasets_api.get(f"{URL}/{sha}").json() == body
    assert stored_files(datasets_dir) == [sha]  # the whole file, under its hash; no part file left


def test_a_zip_of_class_folders_is_images_and_labels(datasets_api: TestClient) -> None:
    members, pixels, labels = make.digit_images()
    body = upload(datasets_api, make.image_zip(members), "digits.zip").json()
    assert body["format"] == "images" and body["samples"] == len(labels)
    assert body["images"] == {"width": 8, "height": 8, "channels": 1, "resize": None}
    image, label = body["arrays"]
    floats = pixels[:, None].astype(np.float32) / 255
    assert image == {**expected_array("image", floats), "dtype": "float32"}
    names = [f"digit_{n}" for n in range(10)]
    counts = np.bincount(labels)
    assert label["name"] == "label" and label["shape"] == [len(labels)] and label["dtype"] == "int64"
    assert label["classes"] == [{"value": n, "count": int(counts[n]), "name": names[n]} for n in range(10)]


def test_images_of_several_sizes_need_resize_and_rgb_makes_three_channels(datasets_api: TestClient) -> None:
    rng = np.random.default_rng(0)
    members = {
        "cat/a.png": make.png(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)),
        "dog/b.jpg": make.png(rng.integers(0, 256, (20, 16), dtype=np.uint8), "JPEG"),
    }
    data = make.image_zip(members)
    refused = upload(datasets_api, data, "pets.zip").json()["detail"][0]
    assert refused["loc"] == ["body", "file", "dog/b.jpg"] and "?resize=" in refused["msg"]
    assert "12x10" in refused["msg"] and "16x20" in refused["msg"]
    body = upload(datasets_api, data, "pets.zip", "?resize=6x4").json()
    assert body["images"] == {"width": 6, "height": 4, "channels": 3, "resize": [6, 4]}
    assert body["arrays"][0]["shape"] == [2, 3, 4, 6]
    assert [c["name"] for c in body["arrays"][1]["classes"]] == ["cat", "dog"]
    # The same bytes with another resize: the stored dataset is named, not replaced.
    conflict = upload(datasets_api, data, "pets.zip", "?resize=8x8")
    assert conflict.status_code == 409 and "6x4" in conflict.json()["detail"][0]["msg"]
    not_images = upload(datasets_api, make.npz(make.digits()), query="?resize=8x8").json()["detail"][0]
    assert not_images["loc"] == ["query", "resize"]


def test_the_format_comes_from_the_content_not_the_name(datasets_api: TestClient) -> None:
    assert upload(datasets_api, make.npz(make.digits()), "looks.csv").json()["format"] == "npz"
    assert upload(datasets_api, make.csv(make.wine_columns()), "looks.npz").json()["format"] == "csv"
    refused = upload(datasets_api, b"\x89PNG\r\n\x1a\n" + bytes(64), "data.csv")
    assert refused.status_code == 415 and refused.json()["detail"][0]["type"] == "unsupported_format"


def test_the_same_bytes_are_the_same_dataset(datasets_api: TestClient, datasets_dir: Path) -> None:
    data = make.npz(make.digits())
    first = upload(datasets_api, data, "a.npz")
    again = upload(datasets_api, data, "b.npz")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()  # the stored one, its first name included
    listed = datasets_api.get(URL).json()
    assert listed["count"] == 1 and [d["id"] for d in listed["data"]] == [first.json()["id"]]
    assert stored_files(datasets_dir) == [first.json()["id"]]


def test_list_pages_newest_first_and_delete_removes_the_file(
    datasets_api: TestClient, datasets_dir: Path
) -> None:
    ids = [upload(datasets_api, make.npz({"x": np.arange(n + 1.0)})).json()["id"] for n in range(3)]
    page = datasets_api.get(URL, params={"offset": 1, "limit": 1}).json()
    assert page["count"] == 3 and [d["id"] for d in page["data"]] == [ids[1]]
    assert datasets_api.delete(f"{URL}/{ids[1]}").status_code == 204
    assert datasets_api.get(f"{URL}/{ids[1]}").status_code == 404
    assert datasets_api.delete(f"{URL}/{ids[1]}").status_code == 404
    assert stored_files(datasets_dir) == sorted([ids[0], ids[2]])
    assert datasets_api.get(f"{URL}/not-a-hash").status_code == 422


@pytest.fixture
def keys(datasets_dir: Path) -> Callable[[str], dict[str, str]]:
    app.state.api_lock = APILock(api_keys=["alice", "bob"], admin_keys=["root"])
    return lambda key: {"X-API-Key": key}


def test_datasets_belong_to_their_key(datasets_api: TestClient, datasets_dir: Path, keys: Callable) -> None:
    data = make.npz(make.digits())
    sha = upload(datasets_api, data, "mine.npz", **keys("alice")).json()["id"]
    assert datasets_api.post(URL, files={"file": ("x", data)}).status_code == 401
    for method in ("GET", "DELETE"):
        response = datasets_api.request(method, f"{URL}/{sha}", headers=keys("bob"))
        assert response.status_code == 404, (method, response.text)  # as if it did not exist
    assert datasets_api.get(URL, headers=keys("bob")).json() == {"data": [], "count": 0}
    # Bob's upload of the same bytes is his own record, over the same file.
    assert upload(datasets_api, data, "his.npz", **keys("bob")).status_code == 201
    assert datasets_api.get(f"{URL}/{sha}", headers=keys("bob")).json()["name"] == "his.npz"
    assert datasets_api.get(f"{URL}/{sha}", headers=keys("alice")).json()["name"] == "mine.npz"
    assert datasets_api.get(URL, headers=keys("root")).json()["count"] == 2
    assert datasets_api.delete(f"{URL}/{sha}", headers=keys("alice")).status_code == 204
    assert stored_files(datasets_dir) == [sha]  # bob's record still needs it
    assert datasets_api.get(f"{URL}/{sha}", headers=keys("bob")).status_code == 200
    assert (
        datasets_api.delete(f"{URL}/{sha}", headers=keys("root")).status_code == 204
    )  # an admin: every key's
    assert datasets_api.get(f"{URL}/{sha}", headers=keys("bob")).status_code == 404
    assert stored_files(datasets_dir) == []


def test_past_the_file_limit_or_the_key_quota_is_413_naming_it(
    datasets_api: TestClient, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make.npz(make.digits())  # ~470 kB
    monkeypatch.setattr(settings, "max_dataset_bytes", len(data) - 1)
    declared = upload(datasets_api, data)
    streamed = datasets_api.post(
        URL, content=_chunks(data), headers={"content-type": f"multipart/form-data; boundary={B}"}
    )
    for response in (declared, streamed):  # refused by its Content-Length, and while it streams in
        assert response.status_code == 413, response.text
        error = response.json()["detail"][0]
        assert error["ctx"] == {"limit": len(data) - 1, "setting": "MB_MAX_DATASET_BYTES"}
    monkeypatch.setattr(settings, "max_dataset_bytes", 1 << 20)
    monkeypatch.setattr(settings, "max_datasets_bytes", len(data) + 1000)
    assert upload(datasets_api, data).status_code == 201
    assert upload(datasets_api, data).status_code == 200  # the same bytes take no more room
    over = upload(datasets_api, make.npz({"x": np.zeros(1000)}))
    assert over.status_code == 413 and over.json()["detail"][0]["ctx"]["setting"] == "MB_MAX_DATASETS_BYTES"
    assert stored_files(datasets_dir) == [hashlib.sha256(data).hexdigest()]


B = "mb-test-boundary"


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    """A multipart body sent in chunks, without a Content-Length (chunked transfer encoding)."""
    yield f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'.encode()
    for start in range(0, len(data), size):
        yield data[start : start + size]
    yield f"\r\n--{B}--\r\n".encode()


def test_a_chunked_upload_is_received_whole(datasets_api: TestClient) -> None:
    data = make.npz(make.digits())
    headers = {"content-type": f"multipart/form-data; boundary={B}"}
    response = datasets_api.post(URL, content=_chunks(data, 1000), headers=headers)
    assert response.status_code == 201 and response.json()["id"] == hashlib.sha256(data).hexdigest()


def test_an_upload_past_the_json_body_limit_is_streamed_past_it(datasets_api: TestClient) -> None:
    data = make.npz({"x": np.random.default_rng(0).random((512, 512))})  # 2 MiB
    assert len(data) > settings.max_body_bytes
    assert upload(datasets_api, data).status_code == 201
    too_big = datasets_api.post(
        "/v1/models/summary", content=data, headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413  # the other routes keep MB_MAX_BODY_BYTES


def test_the_openapi_upload_is_multipart_with_a_file_field(datasets_api: TestClient) -> None:
    operation = datasets_api.get("/openapi.json").json()["paths"][URL]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and body["properties"]["file"]["type"] == "string"
    assert {"201", "200", "409", "413", "415", "422"} <= set(operation["responses"])

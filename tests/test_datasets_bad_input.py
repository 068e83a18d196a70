"""Every kind of bad upload of issue 19 is a clear 4xx naming what is wrong (the array, column,
cell or zip member), never a 500, and leaves nothing on disk: no dataset file, no part file.
Where numpy or Pillow has a verdict of its own (a pickled array, a header too long, a
decompression bomb), the test checks that they refuse the same file. The cut-off and disk-full
uploads to a real server are in test_datasets_server.py."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import settings
from app.datasets.npz import NPY_MAX_HEADER_SIZE
from tests import dataset_files as make
from tests.dataset_files import URL, stored_files, upload

MiB = 1 << 20


def refused(response, status: int = 422) -> dict:
    """The single error of a 4xx answer in FastAPI's format."""
    assert response.status_code == status, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list) and len(errors) == 1 and {"loc", "msg", "type"} <= set(errors[0]), errors
    return errors[0]


@pytest.fixture(autouse=True)
def nothing_left(datasets_dir: Path):
    yield
    assert stored_files(datasets_dir) == [], "a refused upload left a file behind"


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


# -- NPZ ------------------------------------------------------------------------------------------


def test_a_pickled_npz_member_is_refused_saying_so(datasets_api: TestClient) -> None:
    data = make.npz({"x": np.zeros(3), "meta": np.array([{"a": 1}, None], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(io.BytesIO(data), allow_pickle=False)["meta"]
    error = refused(upload(datasets_api, data))
    assert error["loc"] == ["body", "file", "meta"] and "pickled" in error["msg"]


def test_an_npz_header_past_numpys_max_header_size_is_refused(datasets_api: TestClient) -> None:
    header = (
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }".ljust(NPY_MAX_HEADER_SIZE + 100) + "\n"
    )
    member = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + bytes(4)
    data = zip_of({"x.npy": member})
    with pytest.raises(ValueError, match="max_header_size"):
        np.load(io.BytesIO(data), allow_pickle=False)["x"]
    error = refused(upload(datasets_api, data))
    assert error["loc"] == ["body", "file", "x"] and "max_header_size" in error["msg"]
    assert error["ctx"] == {"limit": NPY_MAX_HEADER_SIZE, "got": len(header)}


def test_nan_and_strings_and_disagreeing_samples_name_the_array(datasets_api: TestClient) -> None:
    nan = np.ones((4, 3), dtype=np.float32)
    nan[2, 1] = np.nan
    error = refused(upload(datasets_api, make.npz({"x": nan})))
    assert error["loc"] == ["body", "file", "x"] and error["ctx"] == {"index": [2, 1]}
    error = refused(upload(datasets_api, make.npz({"x": np.zeros(3), "s": np.array(["a", "b", "c"])})))
    assert error["loc"] == ["body", "file", "s"] and "<U1" in error["msg"]
    error = refused(upload(datasets_api, make.npz({"x": np.zeros((5, 2)), "y": np.zeros(4)})))
    assert error["loc"] == ["body", "file", "y"] and error["ctx"] == {"samples": {"x": 5, "y": 4}}
    assert "scalar" in refused(upload(datasets_api, make.npz({"x": np.float32(1)})))["msg"]


def test_a_cut_npz_member_is_refused(datasets_api: TestClient) -> None:
    member = npy(np.arange(1000, dtype=np.float64))
    error = refused(upload(datasets_api, zip_of({"x.npy": member[:-8]})))
    assert error["loc"] == ["body", "file", "x"] and "cut short" in error["msg"]


# -- zips: paths, bombs, too many members ---------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.npy", "/abs/x.npy", "cat/../../a.png", "C:/windows/a.png"])
def test_a_zip_member_with_dotdot_or_an_absolute_path_is_refused(datasets_api: TestClient, name: str) -> None:
    error = refused(upload(datasets_api, zip_of({name: npy(np.zeros(2)), "ok/b.png": b""})))
    assert error["loc"] == ["body", "file", name] and "absolute path or '..'" in error["msg"]


@pytest.mark.parametrize("member", ["x.npy", "cat/a.png"])
def test_a_zip_bomb_is_stopped_at_the_limit_while_inflating(
    datasets_api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    member: str,
) -> None:
    monkeypatch.setattr(settings, "max_dataset_bytes", 4 * MiB)
    inflated = npy(np.zeros((1024, 16 * 1024), dtype=np.uint8))  # a valid array, 16 MiB inflated
    data = zip_of({member: inflated})
    assert len(data) < 64 << 10
    error = refused(upload(datasets_api, data), 413)
    assert (
        error["ctx"] == {"limit": 4 * MiB, "setting": "MB_MAX_DATASET_BYTES"} and "inflated" in error["msg"]
    )


def test_a_zip_whose_stated_sizes_lie_is_read_no_further_than_stated(datasets_api: TestClient) -> None:
    member = npy(np.zeros(MiB, dtype=np.uint8))
    data = zip_of({"x.npy": member})
    true_size, stated = struct.pack("<I", len(member)), struct.pack("<I", 1000)
    assert data.count(true_size) == 2  # the local header's and the central directory's
    error = refused(upload(datasets_api, data.replace(true_size, stated)))
    assert error["loc"] == ["body", "file", "x"]


def test_a_zip_of_too_many_members_is_refused_before_they_are_listed(
    datasets_api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "max_dataset_samples", 10)
    error = refused(
        upload(datasets_api, zip_of({f"c/{i}.png": b"" for i in range(1100)}, zipfile.ZIP_STORED))
    )
    assert "1100 members" in error["msg"] and error["ctx"] == {"limit": 10 + 1024}


# -- Parquet and CSV ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "footer", "strings"])
def test_a_corrupt_or_unusable_parquet_file_is_refused(datasets_api: TestClient, damage: str) -> None:
    good = make.parquet(make.wine_columns())
    data = {
        "truncated": good[: len(good) // 2] + b"PAR1",
        "footer": good[:-200] + bytes(range(192)) + good[-8:],
        "strings": make.parquet({"x": np.zeros(2), "name": np.array(["a", "b"])}),
    }[damage]
    error = refused(upload(datasets_api, data, "wine.parquet"))
    if damage == "strings":
        assert error["loc"] == ["body", "file", "name"] and "string" in error["msg"]
    else:
        assert "not a readable Parquet file" in error["msg"]


def test_a_ragged_csv_names_the_row(datasets_api: TestClient) -> None:
    error = refused(upload(datasets_api, b"a,b,c\n1,2,3\n4,5\n7,8,9\n"))
    assert error["type"] == "csv_ragged" and error["ctx"] == {"row": 3, "cells": 2}
    assert "row 3" in error["msg"]


@pytest.mark.parametrize(
    ("body", "row", "column"),
    [
        (b"a,b\n1,2\n3,x\n", 3, "b"),  # in the first block: a type error past inference
        (b"a,b\n" + b"1,2\n" * 300_000 + b"oops,2\n", 300_002, "a"),  # in a later block
        (b"a,b\n1,2\n3,\n", 3, "b"),  # an empty cell
        (b"a,b\n1,inf\n", 2, "b"),  # not finite
    ],
)
def test_a_csv_cell_that_is_not_a_number_is_named_by_row_and_column(
    datasets_api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    row: int,
    column: str,
) -> None:
    monkeypatch.setattr(settings, "max_dataset_samples", 400_000)
    error = refused(upload(datasets_api, body))
    assert error["loc"] == ["body", "file", column] and error["ctx"]["row"] == row
    assert f"row {row} (the header is row 1), column {column!r}" in error["msg"]


# -- images ---------------------------------------------------------------------------------------


def test_an_image_that_is_not_an_image_is_refused_naming_it(datasets_api: TestClient) -> None:
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, "GIF")
    for name, data in (("cat/a.png", b"not an image at all"), ("cat/b.gif", gif.getvalue())):
        members = {"dog/ok.png": make.png(np.zeros((4, 4), np.uint8)), name: data}
        error = refused(upload(datasets_api, make.image_zip(members)))
        assert error["loc"] == ["body", "file", name] and "not a PNG or JPEG" in error["msg"]


def test_a_truncated_image_is_refused_naming_it(datasets_api: TestClient) -> None:
    image = make.png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    error = refused(upload(datasets_api, make.image_zip({"cat/a.png": image[: len(image) // 2]})))
    assert error["loc"] == ["body", "file", "cat/a.png"] and "does not decode" in error["msg"]


@pytest.mark.parametrize("size", [(10_000, 9_000), (20_000, 10_000)])  # Pillow warns at 1x, raises at 2x
def test_a_decompression_bomb_image_is_refused_before_decoding(datasets_api: TestClient, size) -> None:
    buffer = io.BytesIO()
    Image.new("1", size).save(buffer, "PNG")
    assert size[0] * size[1] > Image.MAX_IMAGE_PIXELS and buffer.tell() < MiB
    error = refused(upload(datasets_api, make.image_zip({"cat/bomb.png": buffer.getvalue()})))
    assert error["loc"] == ["body", "file", "cat/bomb.png"] and "decompression bomb" in error["msg"]
    assert str(Image.MAX_IMAGE_PIXELS) in error["msg"]


def test_images_outside_class_folders_are_refused(datasets_api: TestClient) -> None:
    pixel = make.png(np.zeros((2, 2), np.uint8))
    error = refused(upload(datasets_api, make.image_zip({"a.png": pixel})))
    assert error["loc"] == ["body", "file", "a.png"] and "class folder" in error["msg"]
    error = refused(upload(datasets_api, make.image_zip({"train/cat/a.png": pixel, "test/cat/b.png": pixel})))
    assert "more than one folder" in error["msg"]


# -- samples, formats, the form -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npz", "csv", "parquet", "images"])
def test_more_samples_than_the_setting_is_refused_naming_it(
    datasets_api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    monkeypatch.setattr(settings, "max_dataset_samples", 100)
    data = make.image_zip(make.digit_images(150)[0]) if kind == "images" else make.FORMATS[kind]()[0]
    error = refused(upload(datasets_api, data))
    assert "MB_MAX_DATASET_SAMPLES" in error["msg"] and error["ctx"]["limit"] == 100


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a format it recognises"),
        (b"\x00\x01\x02binary", "not a format it recognises"),
        (npy(np.zeros(3)), "single .npy"),
    ],
)
def test_an_unknown_format_is_415_listing_the_formats(
    datasets_api: TestClient, data: bytes, what: str
) -> None:
    error = refused(upload(datasets_api, data), 415)
    assert what in error["msg"] and "Parquet" in error["ctx"]["formats"]


def test_a_broken_safetensors_header_is_refused(datasets_api: TestClient) -> None:
    good = make.safetensors({"x": np.zeros((4, 2), np.float32)})
    broken = good[:8] + good[8:].replace(b'"data_offsets":[0,32]', b'"data_offsets":[0,64]')
    assert broken != good
    assert "not a valid safetensors file" in refused(upload(datasets_api, broken))["msg"]


def test_the_form_must_hold_one_file_field(datasets_api: TestClient) -> None:
    assert refused(datasets_api.post(URL, files={"other": ("x", b"1,2\n")}))["loc"] == ["body", "other"]
    assert refused(datasets_api.post(URL, data={"resize": "8x8"}, files={"file": ("x", b"a\n1\n")}))[
        "loc"
    ] == [
        "body",
        "resize",
    ]
    two = datasets_api.post(URL, files=[("file", ("a", b"a\n1\n")), ("file", ("b", b"a\n2\n"))])
    assert "more than one" in refused(two)["msg"]
    missing = datasets_api.post(
        URL, content=b"--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert refused(missing) == {"type": "missing", "loc": ["body", "file"], "msg": "Field required"}
    assert refused(datasets_api.post(URL, json={"file": "x"}), 415)["loc"] == ["header", "content-type"]
    assert refused(upload(datasets_api, b""))["msg"] == "the file is empty"


def test_an_upload_without_its_closing_boundary_is_cut_off(datasets_api: TestClient) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\na,b\n1,2\n'
    error = refused(
        datasets_api.post(URL, content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    )
    assert error["type"] == "upload_incomplete"


PART = b'--b\r\nContent-Disposition: form-data; name="file"%s\r\n\r\n%s\r\n--b--\r\n'


@pytest.mark.parametrize(
    ("body", "content_type", "status", "loc", "kind"),
    [
        (PART % (b"", b"just text"), "boundary=b", 422, ["body", "file"], "dataset_invalid"),
        (b"x" * 100, "boundary=b", 422, ["body"], "multipart_invalid"),
        (b"", "boundary=b", 422, ["body"], "upload_incomplete"),
        (b"--b\r\n\r\n\r\n--b--\r\n", "boundary=b", 422, ["body", ""], "extra_forbidden"),
        (
            b"--b\r\nContent-Type: text/csv\r\n\r\na\n1\n\r\n--b--\r\n",
            "boundary=b",
            422,
            ["body", ""],
            "extra_forbidden",
        ),
        (b"--\r\n", 'boundary=""', 415, ["header", "content-type"], "unsupported_media_type"),
        (b"--b\r\n", "boundary=" + "b" * 500, 422, ["body"], "multipart_invalid"),
        (
            PART % (b'; filename="' + b"a" * 200_000 + b'"', b"a\n1\n"),
            "boundary=b",
            422,
            ["body"],
            "multipart_invalid",
        ),
    ],
    ids=[
        "file is text",
        "not multipart",
        "empty",
        "part without headers",
        "part without a name",
        "empty boundary",
        "boundary of 500",
        "part header of 200 kB",
    ],
)
def test_a_hostile_form_is_a_4xx_at_its_place(
    datasets_api: TestClient, body: bytes, content_type: str, status: int, loc: list, kind: str
) -> None:
    response = datasets_api.post(
        URL, content=body, headers={"content-type": f"multipart/form-data; {content_type}"}
    )
    error = refused(response, status)
    assert error["loc"] == loc and error["type"] == kind, error

"""Uploads to a real server (uvicorn in its own process, no Ray) that end badly: the client
cutting the connection mid-stream, and the disk filling up mid-upload. The disk is a file-size
limit (``RLIMIT_FSIZE``, set in the server's process only: writes past it fail with EFBIG, as on
a full disk they fail with ENOSPC). Each leaves no file behind, and the server goes on serving."""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests import dataset_files as make
from tests.dataset_files import stored_files
from tests.servers import clean_env, running_server, wait_for

MiB = 1 << 20
FILE_LIMIT = 6 * MiB  # the largest file the server process may write


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("datasets-server")
    env = clean_env(MB_DATA_DIR=str(data_dir), MB_RAY_EAGER_START="false")
    log = data_dir.parent / f"{data_dir.name}.log"
    with running_server(env, log=log, preexec_fn=_limit_file_size) as (url, _):
        yield url, data_dir


def part_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "datasets" / ".incoming").glob("*.part"))


def test_an_upload_cut_off_mid_stream_leaves_nothing(server: tuple[str, Path]) -> None:
    url, data_dir = server
    address = urlsplit(url)
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: {address.netloc}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 4194304\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
    ).encode()
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(head + bytes(2 * MiB))  # half of what it announced
        wait_for("the part file", lambda: [p for p in part_files(data_dir) if p.stat().st_size >= MiB], 30)
    wait_for("the part file's removal", lambda: not part_files(data_dir), 30)
    assert stored_files(data_dir) == []
    assert httpx.get(f"{url}/v1/datasets").json() == {"data": [], "count": 0}


def test_a_disk_that_fills_mid_upload_is_413_and_leaves_nothing(server: tuple[str, Path]) -> None:
    url, data_dir = server
    big = make.npz({"x": np.random.default_rng(0).random((1024, 1024))})  # 8 MiB > FILE_LIMIT
    response = httpx.post(f"{url}/v1/datasets", files={"file": ("big.npz", big)}, timeout=60)
    assert response.status_code == 413, response.text
    error = response.json()["detail"][0]
    assert error["type"] == "insufficient_storage" and "disk filled up" in error["msg"]
    assert response.headers["connection"] == "close"  # refused mid-stream: the rest was not read
    assert stored_files(data_dir) == []
    small = make.npz(make.digits())
    assert httpx.post(f"{url}/v1/datasets", files={"file": ("d.npz", small)}, timeout=60).status_code == 201

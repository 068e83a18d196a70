"""The trace pool behind a real server (uvicorn, uvloop): a large answer read whole, and a big
ONNX export written by its trace worker, streamed from a file, so the API process's memory does
not grow by the file's size."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.servers import clean_env, running_server

EMBEDDING = {"type": "Embedding", "num_embeddings": 1 << 17, "embedding_dim": 256}  # 128 MiB of weights
ARTIFACT = (1 << 17) * 256 * 4


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (its peak) of ``pid``, in bytes."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def test_a_big_export_is_streamed_and_the_api_process_does_not_hold_it(tmp_path):
    env = clean_env(MB_RAY_EAGER_START="false", MB_TRACE_PROCESSES="1", MB_DATA_DIR=str(tmp_path))
    body = {"model": {"layers": [EMBEDDING]}, "input_shape": [2, 8], "input_dtype": "int64", "format": "onnx"}
    with running_server(env) as (url, proc):
        # An answer of ~200 kB: uvloop leaves the worker's pipe non-blocking, which once cut it short.
        repeat = {"type": "Repeat", "times": 500, "layers": [{"type": "Linear", "out_features": 2}]}
        large = {"model": {"layers": [repeat]}, "input_shape": [1, 2]}
        answer = httpx.post(f"{url}/v1/models/summary", json=large, timeout=300)
        assert answer.status_code == 200, answer.text
        assert len(answer.content) > 1 << 17 and len(answer.json()["layers"]) == 501
        before = _memory(proc.pid)
        received = 0
        with httpx.stream("POST", f"{url}/v1/models/export", json=body, timeout=600) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_bytes():
                received += len(chunk)
        after = _memory(proc.pid)
    assert received > ARTIFACT
    assert after["VmHWM"] - before["VmRSS"] < ARTIFACT // 2  # generous: the file never entered it
    assert list((tmp_path / "exports").iterdir()) == []  # deleted once sent

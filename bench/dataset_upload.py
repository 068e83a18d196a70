"""Upload throughput and the server's memory during an upload, against a plain file copy.

A random float32 NPZ of ``--mb`` MB (``--samples`` rows) is made in a temporary directory and:

- **copied** with ``shutil.copyfile`` plus ``fsync`` on the same disk: the ceiling for writing it;
- **uploaded** to the real app (uvicorn in its own process, no Ray) with ``POST /v1/datasets``,
  an httpx client streaming the file as ``multipart/form-data``. The answer comes once the file is
  on disk (synced, renamed) and described (every array read again, chunk by chunk, for its
  min/max/mean), so the upload's MB/s covers both.

The server's RSS is sampled from ``/proc/<pid>/status`` every 10 ms from just before the upload
to its answer: its peak is set against its idle RSS (after start-up and a first request). The
upload streams to disk, so the peak should stay near idle, whatever ``--mb``.

    .venv/bin/python bench/dataset_upload.py --mb 500 --repeat 3    # a few minutes
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import clean_env, free_port, stop, uvicorn_command, wait_for  # noqa: E402

MB = 1_000_000


def make_npz(path: Path, mb: int, samples: int) -> None:
    """A float32 array of about ``mb`` MB, ``samples`` rows, and int64 labels, written in chunks."""
    features = max(1, mb * MB // (4 * samples))
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(path.with_suffix(".npy"), "w+", np.float32, (samples, features))
    for start in range(0, samples, 4096):
        x[start : start + 4096] = rng.random((min(4096, samples - start), features), dtype=np.float32)
    x.flush()
    del x
    with zipfile.ZipFile(path, "w") as archive:  # np.savez's layout: one stored .npy per array
        archive.write(path.with_suffix(".npy"), "x.npy")
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, rng.integers(0, 10, samples))
    path.with_suffix(".npy").unlink()


def copy_seconds(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, rss_bytes(self.pid))


async def drain(scope: dict, receive, send) -> None:
    """The ceiling: an ASGI app that reads a request's body and drops it (uvicorn's own cost)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@contextmanager
def serving(app: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """``app`` under uvicorn in its own process: its base URL and pid."""
    port = free_port()
    command = [*uvicorn_command(port, "--log-level", "warning"), "--app-dir", str(ROOT / "bench")]
    command[command.index("app.main:app")] = app
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for("the server", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code < 500)
            yield url, server.pid
        finally:
            stop(server)


def post(url: str, path: Path) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    with open(path, "rb") as f:
        response = httpx.post(f"{url}/v1/datasets", files={"file": (path.name, f)}, timeout=3600)
    return time.perf_counter() - start, response.raise_for_status()


def upload(path: Path, work: Path, size: int, repeat: int) -> tuple[list[float], int, int, dict]:
    """Seconds of each upload (the dataset deleted after each, so each is stored and described
    anew), the server's idle RSS and its peak over them all, and its answer."""
    env = clean_env(
        MB_DATA_DIR=str(work / "data"), MB_RAY_EAGER_START="false", MB_MAX_DATASET_BYTES=str(size + MB)
    )
    with serving("app.main:app", env, work / "uvicorn.log") as (url, pid):
        httpx.get(f"{url}/v1/datasets", timeout=30).raise_for_status()  # the store opened, migrated
        time.sleep(1)
        idle = rss_bytes(pid)
        sampler = PeakRSS(pid)
        sampler.start()
        times = []
        try:
            for _ in range(repeat):
                seconds, response = post(url, path)
                times.append(seconds)
                httpx.delete(f"{url}/v1/datasets/{response.json()['id']}", timeout=60).raise_for_status()
        finally:
            sampler.done.set()
            sampler.join()
    return times, idle, max(sampler.peak, idle), response.json()


def rates(size: int, times: list[float]) -> str:
    """The median time and MB/s of ``times``, and their range."""
    mid = statistics.median(times)
    spread = f"of {len(times)}: {min(times):.2f} to {max(times):.2f} s"
    return f"{mid:6.2f} s  {size / MB / mid:7.1f} MB/s  ({spread})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the NPZ file, in MB")
    parser.add_argument("--samples", type=int, default=100_000, help="its rows (MB_MAX_DATASET_SAMPLES)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads of each kind (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-upload-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        path = work / "bench.npz"
        make_npz(path, args.mb, args.samples)
        size = path.stat().st_size
        copies = [copy_seconds(path, work / "copy.npz") for _ in range(args.repeat)]
        with serving("dataset_upload:drain", clean_env(), work / "drain.log") as (url, _):
            ceilings = [post(url, path)[0] for _ in range(args.repeat)]
        times, idle, peak, answer = upload(path, work, size, args.repeat)
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    print(f"{machine}, load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
    command = f"--mb {args.mb} --samples {args.samples} --repeat {args.repeat}"
    print(f"command: .venv/bin/python bench/dataset_upload.py {command}")
    print(f"file: {size / MB:.0f} MB NPZ, arrays {[(a['name'], a['shape']) for a in answer['arrays']]}")
    print(f"plain copy + fsync:    {rates(size, copies)}")
    print(f"uvicorn, body dropped: {rates(size, ceilings)}  (the HTTP ceiling)")
    print(f"POST /v1/datasets:     {rates(size, times)}  (streamed to disk, synced, described)")
    idle_mib, peak_mib = idle / 2**20, peak / 2**20
    print(f"server RSS: idle {idle_mib:.0f} MiB, peak during the uploads {peak_mib:.0f} MiB", end="")
    print(f" (+{peak_mib - idle_mib:.0f} MiB)")


if __name__ == "__main__":
    main()

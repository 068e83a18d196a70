"""Summary requests/s and p50/p99 latency under concurrency, against the framework's ceiling.

Each server is uvicorn (one worker) in its own process on a loopback port; the load generator is
``wrk`` when installed (``apt-get install -y wrk``), else an httpx async client in a separate
process. Servers, one at a time, the same request body for all:

- ``ceiling``: a minimal FastAPI endpoint in this file: a sync ``def`` route (like the summary's)
  that parses the same JSON body into a dict and returns a stored response of the summary's size;
- ``summary, cached``: the real app, the same body every time (the summary cache answers);
- ``summary, traced``: the real app with ``MB_SUMMARY_CACHE_SIZE=0``: every request traces;
- ``summary, traced, ResNet-50``: the same, for a ResNet-50 at batch 64.

Run by hand, not in CI (about a minute); the load generator shares the machine's cores:

    .venv/bin/python bench/summary_throughput.py --connections 32 --duration 10

``--processes 1 2`` instead measures the traced summary (no cache) with ``uvicorn --workers N``
for each N: tracing holds the GIL, so a second API process is the way to a second core.
``--trace-processes 1 2`` measures it with one API process and ``MB_TRACE_PROCESSES=N`` trace
workers (app/core/trace_pool.py, ``MB_MAX_CONCURRENT_TRACES=N``), each N in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastapi import Body, FastAPI  # noqa: E402
from fastapi.responses import Response  # noqa: E402

from app.examples import SMALL_CNN  # noqa: E402

SMALL_CNN_BODY = {"model": SMALL_CNN, "input_shape": [64, 1, 8, 8]}


def resnet50_body() -> dict:
    from summary_vs_torchinfo import CASES

    return CASES["resnet50_b64"]


# -- the ceiling: a minimal endpoint with the same body in and a response of the same size out --

ceiling = FastAPI()
_STORED = Path(os.environ.get("BENCH_CEILING_RESPONSE", "/dev/null"))
CEILING_RESPONSE = _STORED.read_bytes() if _STORED.is_file() else b"{}"


@ceiling.post("/v1/models/summary")
def ceiling_summary(body: Annotated[dict[str, Any], Body()]) -> Response:
    """Parse the body, answer a stored summary: everything but the work."""
    return Response(CEILING_RESPONSE, media_type="application/json")


# -- servers and load ----------------------------------------------------------------------------


def free_port() -> int:
    # Not handed over with --fd: uvicorn takes such a socket for a Unix one and leaves Nagle's
    # algorithm on, which adds ~40 ms (delayed ACK) to every small request.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(app: str, env: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--backlog", "1024", "--workers", str(workers)]
    command += ["--app-dir", str(ROOT / "bench")] if app.startswith("summary_throughput") else []
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded 2-core machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{app} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_wrk(url: str, body: bytes, connections: int, duration: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        script.write_text(
            f'local f = io.open("{body_file}", "rb")\n'
            'wrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            "function done(summary, latency, requests)\n"
            '  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, '
            "summary.duration, latency:percentile(50), latency:percentile(99), "
            "summary.errors.status, summary.errors.connect + summary.errors.read + "
            "summary.errors.write + summary.errors.timeout))\nend\n"
        )
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    requests, duration_us, p50, p99, bad_status, socket_errors = map(
        int, re.search(r"RESULT (.*)", out).group(1).split()
    )
    return {
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "non_2xx": bad_status,
        "socket_errors": socket_errors,
    }


def run_httpx(url: str, body: bytes, connections: int, duration: int) -> dict:
    """The fallback generator, in a child process so it does not share the server's cores' GIL."""
    code = (
        "import asyncio, json, sys, time, httpx\n"
        "url, body = sys.argv[1], open(sys.argv[2], 'rb').read()\n"
        "c, d = int(sys.argv[3]), float(sys.argv[4])\n"
        "lat, bad = [], 0\n"
        "async def worker(client, end):\n"
        "    global bad\n"
        "    while time.perf_counter() < end:\n"
        "        t = time.perf_counter()\n"
        "        r = await client.post(url, content=body, headers={'content-type': 'application/json'})\n"
        "        lat.append(time.perf_counter() - t); bad += r.status_code >= 300\n"
        "async def main():\n"
        "    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=c)) as client:\n"
        "        start = time.perf_counter(); end = start + d\n"
        "        await asyncio.gather(*(worker(client, end) for _ in range(c)))\n"
        "        return time.perf_counter() - start\n"
        "elapsed = asyncio.run(main()); lat.sort()\n"
        "print(json.dumps({'rps': len(lat) / elapsed, 'p50_ms': 1000 * lat[len(lat) // 2],\n"
        "    'p99_ms': 1000 * lat[int(len(lat) * 0.99)], 'non_2xx': bad, 'socket_errors': 0}))\n"
    )
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                url + "/v1/models/summary",
                body_file.name,
                str(connections),
                str(duration),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(app: str, env: dict[str, str], body: dict, args: argparse.Namespace, workers: int = 1) -> dict:
    raw = json.dumps(body).encode()
    proc, url = start_server(app, env, workers)
    try:
        for _ in range(4 * workers):  # every process has started and traced once
            warm = httpx.post(
                f"{url}/v1/models/summary",
                content=raw,
                headers={"content-type": "application/json"},
                timeout=300,  # the first waits for the trace workers' forkserver to warm up
            )
            assert warm.status_code == 200, warm.text[:300]
        if args.generator == "wrk":
            result = run_wrk(f"{url}/v1/models/summary", raw, args.connections, args.duration)
        else:
            result = run_httpx(url, raw, args.connections, args.duration)
        return {**result, "request_bytes": len(raw), "response_bytes": len(warm.content)}
    finally:
        stop(proc)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "?",
    )
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def versions() -> str:
    from importlib.metadata import version

    names = ["torch", "fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools"]
    return f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--model", choices=["small-cnn", "resnet50"], default="small-cnn", help="the scaling runs' body"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per server")
    parser.add_argument(
        "--generator", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx"
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", help="measure the traced summary with uvicorn --workers N, each N"
    )
    parser.add_argument(
        "--trace-processes",
        type=int,
        nargs="+",
        help="measure the traced summary with N trace workers, each N",
    )
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"load generator: {args.generator}, {args.connections} connections, {args.duration} s per server")
    print(f"command: .venv/bin/python bench/summary_throughput.py {' '.join(sys.argv[1:])}".rstrip())
    print("load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    app_env = {"MB_RAY_EAGER_START": "false", "MB_DATA_DIR": tempfile.mkdtemp()}
    traced_env = {**app_env, "MB_SUMMARY_CACHE_SIZE": "0"}
    if args.processes:
        scaling(traced_env, args)
        return
    if args.trace_processes:
        scaling(traced_env, args, trace_processes=True)
        return
    # The ceiling answers the summary's own bytes for the same body: same sizes in and out.
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as stored:
        proc, url = start_server("app.main:app", app_env)
        try:
            stored.write(httpx.post(f"{url}/v1/models/summary", json=SMALL_CNN_BODY, timeout=60).content)
        finally:
            stop(proc)
    rows = [
        (
            "ceiling (minimal endpoint)",
            "summary_throughput:ceiling",
            {"BENCH_CEILING_RESPONSE": stored.name},
            SMALL_CNN_BODY,
        ),
        ("summary, cached (small CNN)", "app.main:app", app_env, SMALL_CNN_BODY),
        ("summary, traced (small CNN)", "app.main:app", traced_env, SMALL_CNN_BODY),
        ("summary, traced (ResNet-50, batch 64)", "app.main:app", traced_env, resnet50_body()),
    ]
    results = []
    for name, app, env, body in rows:
        result = measure(app, env, body, args)
        print(f"  {name}: {json.dumps(result)}", flush=True)
        results.append((name, result))
    os.unlink(stored.name)

    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    ceiling_rps = results[0][1]["rps"]
    print("| server | body in / out | requests/s | p50 | p99 | share of the ceiling | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results:
        sizes = f"{r['request_bytes']:,} B / {r['response_bytes']:,} B"
        print(
            f"| {name} | {sizes} | {r['rps']:,.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
            f"{r['rps'] / ceiling_rps:.2f} | {r['non_2xx'] + r['socket_errors']} |"
        )


def scaling(env: dict[str, str], args: argparse.Namespace, trace_processes: bool = False) -> None:
    """The traced summary (``--model``) with 1, 2, ... API processes (``uvicorn --workers N``), or
    with one API process and 1, 2, ... trace workers."""
    results = []
    env = {**env, "MB_TRACE_CACHE_BYTES": "0"}  # every request traces every layer
    body = resnet50_body() if args.model == "resnet50" else SMALL_CNN_BODY
    what = "trace processes" if trace_processes else "API processes"
    for n in args.trace_processes if trace_processes else args.processes:
        if trace_processes:
            pool = {"MB_TRACE_PROCESSES": str(n), "MB_MAX_CONCURRENT_TRACES": str(n)}
            result = measure("app.main:app", {**env, **pool}, body, args)
        else:
            result = measure("app.main:app", {**env, "MB_TRACE_PROCESSES": "0"}, body, args, n)
        print(f"  {n} {what}: {json.dumps(result)}", flush=True)
        results.append((n, result))
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    base = results[0][1]["rps"]
    print(f"| {what} | requests/s | p50 | p99 | vs. the first | non-2xx |")
    print("|---|---|---|---|---|---|")
    for workers, r in results:
        print(
            f"| {workers} | {r['rps']:,.1f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | "
            f"{r['rps'] / base:.2f}x | {r['non_2xx'] + r['socket_errors']} |"
        )


if __name__ == "__main__":
    main()

"""Summary time of this checkout against other commits, in one run, on the same machine.

Each checkout runs in its own child processes (``PYTHONPATH`` = the checkout), the cases
interleaved (checkout A, B, A, B, ...) so that the machine's load drifts over both alike. Two ways:

- ``trace``: the in-process summary (the analysis the summary endpoint runs, no HTTP), process CPU
  time of one call, median of the warm calls;
- ``http``: one ``POST /v1/models/summary`` through ``TestClient`` with the summary cache off
  (``MB_SUMMARY_CACHE_SIZE=0``, ``MB_TRACE_CACHE_BYTES=0``): validation, limits, trace, JSON.
  The app's lifespan runs (a checkout with trace workers traces in them, as a served API does;
  Ray is not started), so this is **wall time**, median of the warm calls: on a loaded machine
  it measures the load too.

Run by hand, not in CI; make the other checkouts with ``git worktree add /tmp/before <commit>``:

    .venv/bin/python bench/summary_compare.py --before /tmp/before --rounds 3 --warm 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from summary_vs_torchinfo import CASES as TORCHINFO_CASES  # noqa: E402

LSTM_2 = {
    "layers": [
        {"type": "LSTM", "hidden_size": 256, "num_layers": 2},
        {"type": "Linear", "out_features": 10},
    ]
}
CASES: dict[str, dict] = {
    "resnet50_b64": TORCHINFO_CASES["resnet50_b64"],
    "resnet50_b1": TORCHINFO_CASES["resnet50_b1"],
    "transformer_7b": TORCHINFO_CASES["transformer_7b"],
    "bilinear_8100": {
        "model": {"layers": [{"type": "Bilinear", "out_features": 8100}]},
        "input_shape": [1, 1],
    },
    "lstm_b64_t256": {"model": LSTM_2, "input_shape": [64, 256, 32]},
}

CHILD = r"""
import json, os, sys, time
case, warm = json.loads(sys.argv[1]), int(sys.argv[2])
way = sys.argv[3]
os.environ["MB_SUMMARY_CACHE_SIZE"] = "0"
os.environ["MB_TRACE_CACHE_BYTES"] = "0"  # every call traces every layer (bench/summary_edit.py: warm edits)

def summarize_function():
    # The in-process summary, wherever this checkout keeps it (by file: importing a module the
    # checkout lacks would fall through to the editable install's copy of another checkout).
    for module, name in (
        ("app.analysis", "summarize"),
        ("layers.analysis.summary", "summarize"),
        ("layers.summary", "summarize"),
    ):
        path = module.replace(".", "/")
        if os.path.exists(path + ".py") or os.path.exists(path + "/__init__.py"):
            return getattr(__import__(module, fromlist=[name]), name)
    raise SystemExit("no summarize in this checkout")

if way == "trace":
    from layers import ModelSpec
    summarize = summarize_function()
    spec = ModelSpec.model_validate(case["model"])
    def call():
        summarize(spec, tuple(case["input_shape"]), case.get("input_dtype", "float32"))
else:
    import tempfile
    os.environ.update(MB_RAY_EAGER_START="0", MB_DATA_DIR=tempfile.mkdtemp())
    from fastapi.testclient import TestClient
    from app.main import app
    client = TestClient(app).__enter__()  # the lifespan: trace workers where the checkout has them
    def call():
        response = client.post("/v1/models/summary", json=case)
        assert response.status_code == 200, response.text[:300]
clock = time.process_time if way == "trace" else time.perf_counter
times = []
for i in range(warm + 1):
    started = clock()
    call()
    times.append(clock() - started)
print(json.dumps({"first": times[0], "warm": sorted(times[1:])[len(times[1:]) // 2]}), flush=True)
if way != "trace":
    client.__exit__(None, None, None)  # stops the trace workers
"""


def run(checkout: Path, case: dict, way: str, warm: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(case), str(warm), way],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode:
        raise RuntimeError(f"{checkout} {way}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def commit_of(checkout: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h"], capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, action="append", required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per checkout and case")
    parser.add_argument("--warm", type=int, default=3, help="warm calls per child")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--ways", nargs="*", default=["trace", "http"])
    args = parser.parse_args()
    checkouts = [ROOT, *args.before]
    labels = {c: commit_of(c) + (" (this)" if c == ROOT else "") for c in checkouts}
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print(f"# command: {' '.join(sys.argv)}")
    started = time.time()
    header = " | ".join(labels[c] for c in checkouts)
    print(f"| model | way | {header} | this / " + " | this / ".join(labels[c] for c in args.before) + " |")
    print("|---|---|" + "---|" * (2 * len(checkouts) - 1))
    for name in args.cases:
        for way in args.ways:
            warm: dict[Path, list[float]] = {c: [] for c in checkouts}
            for _ in range(args.rounds):
                for checkout in checkouts:
                    warm[checkout].append(run(checkout, CASES[name], way, args.warm)["warm"])
            medians = {c: statistics.median(v) for c, v in warm.items()}
            cells = " | ".join(f"{medians[c]:.3f} s" for c in checkouts)
            ratios = " | ".join(f"{medians[ROOT] / medians[c]:.2f}x" for c in args.before)
            print(f"| {name} | {way} | {cells} | {ratios} |", flush=True)
    print(f"# {time.time() - started:.0f} s, load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

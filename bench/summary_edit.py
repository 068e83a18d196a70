"""One-layer edits re-summarised: the whole model traced cold, against the trace cache warm.

A frontend re-summarises on every edit. Server time of one summary is what the summary route
does after validation: the trace (``app.analysis.trace``'s ``trace_model``), the summary and its
JSON. For each model and edit, every repetition:

- **cold**: the edited model traced with no cache;
- **warm**: a fresh trace cache, filled by summarising the model before the edit (not timed),
  then the edited model.

Wall and CPU time (this thread's) are the medians of ``--runs`` repetitions; the answers are
checked to be the same bytes. Run by hand, not in CI (a few minutes on a busy 2-core machine):

    .venv/bin/python bench/summary_edit.py --runs 5
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from reference_specs import CASES  # noqa: E402

from app.analysis import summary  # noqa: E402
from app.schemas.summary import SummaryRequest  # noqa: E402
from layers.analysis.cache import TraceCache  # noqa: E402
from layers.analysis.trace import trace_model  # noqa: E402

Edit = Callable[[list[dict]], None]


def resize_head(layers: list[dict]) -> None:
    layers[-1]["out_features"] += 1


def insert_dropout(layers: list[dict]) -> None:
    layers.insert(len(layers) - 1, {"type": "Dropout", "p": 0.2})


def delete_before_head(layers: list[dict]) -> None:
    del layers[-2]


EDITS: dict[str, Edit] = {
    "resize the head (Linear out_features + 1)": resize_head,
    "insert a Dropout before the head": insert_dropout,
    "delete the layer before the head": delete_before_head,
    "none (the same model again)": lambda layers: None,
}
MODELS = {"Llama-2-7B stack, 1 x 2048 tokens": "llama_2_7b", "ResNet-50, batch 2": "resnet50"}


def summarised(case: dict, cache: TraceCache | None) -> tuple[bytes, float, float]:
    """The summary's JSON, and the wall and CPU seconds it took."""
    request = SummaryRequest.model_validate(case)
    wall, cpu = time.perf_counter(), time.thread_time()
    traced = trace_model(request.model, tuple(request.input_shape), request.input_dtype, cache=cache)
    body = summary(traced).model_dump_json().encode()
    return body, time.perf_counter() - wall, time.thread_time() - cpu


def measure(case: dict, edit: Edit, runs: int) -> dict[str, tuple[float, float]]:
    edited = copy.deepcopy(case)
    edit(edited["model"]["layers"])
    times: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    for _ in range(runs):
        cold, *cold_times = summarised(edited, None)
        cache = TraceCache(1 << 30)
        summarised(case, cache)
        warm, *warm_times = summarised(edited, cache)
        assert warm == cold, "the warm answer is the cold one"
        times["cold"].append(tuple(cold_times))
        times["warm"].append(tuple(warm_times))
    return {
        k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for case in (CASES[name] for name in MODELS.values()):
        summarised(case, None)  # the first trace in a process pulls in lazy imports
    print(
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"command: .venv/bin/python bench/summary_edit.py --runs {args.runs}\n")
    print("| model | edit | cold wall | cold CPU | warm wall | warm CPU | cold / warm (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for model, name in MODELS.items():
        for edit_name, edit in EDITS.items():
            t = measure(CASES[name], edit, args.runs)
            (cw, cc), (ww, wc) = t["cold"], t["warm"]
            print(
                f"| {model} | {edit_name} | {cw * 1e3:.0f} ms | {cc * 1e3:.0f} ms | {ww * 1e3:.0f} ms "
                f"| {wc * 1e3:.0f} ms | {cc / wc:.1f}x |",
                flush=True,
            )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

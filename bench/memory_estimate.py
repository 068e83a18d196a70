"""Training memory: our estimate, torchinfo's and the "4 x weights" rule, against measured truth.

    .venv/bin/python bench/memory_estimate.py --part accuracy   # the zoo, real CPU runs (~1 min)
    .venv/bin/python bench/memory_estimate.py --part timing     # 7B transformer, ResNet-50 (~1 min)
    .venv/bin/python bench/memory_estimate.py --part plain      # the summary without training
    # before: run it from another checkout (git worktree add /tmp/before <commit>); see bench/README.md

accuracy: each model trains for real on the CPU at the given batch; the truth is the peak that
``MemTracker`` (torch.distributed._tools.mem_tracker) sees over a steady-state step (Adam, its
state made by a first step), and the bytes ``saved_tensors_hooks`` sees autograd keep. Against it:
- ours: ``training_peak_bytes`` of ``layers.analysis.memory`` on meta (device "cpu"), and ``activations``;
- torchinfo 1.8's "Estimated Total Size" (input + "forward/backward pass size" + parameters);
- the "4 x weights" rule of ``accelerate estimate-memory`` for Adam (weights, gradients, 2 states).

timing: the summary with ``training`` (trace + memory) for a ~7B transformer at batch 1 x 2048
tokens and ResNet-50 at batch 64, first call and warm (median of 3), wall and this thread's CPU
time (the machine is shared: CPU time is what the work costs), and RSS growth of the first call
and of the warm calls.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# The checkout in the working directory: `--part plain` run from another checkout times that one.
ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from summary_vs_torchinfo import resnet50, transformer_7b  # noqa: E402

from app.analysis import summarize, summary  # noqa: E402
from layers import ModelSpec  # noqa: E402
from layers.analysis.memory import estimate_memory  # noqa: E402
from layers.analysis.trace import trace_model  # noqa: E402
from layers.training.optimizers import AdamSpec  # noqa: E402

MIB = 1 << 20
CONV64 = {"type": "Conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1}
BASIC = {
    "type": "Residual",
    "layers": [
        {**CONV64, "bias": False},
        {"type": "BatchNorm2d"},
        {"type": "ReLU"},
        {**CONV64, "bias": False},
        {"type": "BatchNorm2d"},
    ],
}
ZOO = {
    "CNN: 2 x (Conv 64, BN, ReLU) + pool + Linear, 64x64 (32)": (
        [
            *[CONV64, {"type": "BatchNorm2d"}, {"type": "ReLU"}] * 2,
            {"type": "MaxPool2d", "kernel_size": 2},
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 10},
        ],
        (32, 3, 64, 64),
    ),
    "ResNet basic blocks: stem + 2 x BasicBlock(64), 56x56 (32)": (
        [CONV64, {"type": "BatchNorm2d"}, {"type": "ReLU"}, BASIC, {"type": "ReLU"}, BASIC, {"type": "ReLU"}],
        (32, 3, 56, 56),
    ),
    "2-layer LSTM(64->256), T=100 (32)": (
        [{"type": "LSTM", "hidden_size": 256, "num_layers": 2}],
        (32, 100, 64),
    ),
    "bidirectional GRU(64->256), T=100 (32)": (
        [{"type": "GRU", "hidden_size": 256, "bidirectional": True}],
        (32, 100, 64),
    ),
    "Llama block: RMSNorm, attention 8 heads (4 kv) with RoPE, SwiGLU 1024; 256 wide, T=128 (32)": (
        [
            {
                "type": "Residual",
                "layers": [
                    {"type": "RMSNorm"},
                    {"type": "CausalSelfAttention", "num_heads": 8, "num_kv_heads": 4},
                ],
            },
            {
                "type": "Residual",
                "layers": [{"type": "RMSNorm"}, {"type": "SwiGLU", "hidden_features": 1024}],
            },
        ],
        (32, 128, 256),
    ),
    "4 x TransformerEncoderLayer(256, 8, 1024), T=128 (32)": (
        [{"type": "TransformerEncoderLayer", "nhead": 8, "dim_feedforward": 1024}] * 4,
        (32, 128, 256),
    ),
}


def measured(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(peak of a steady-state Adam step per MemTracker, bytes saved for backward) on real tensors."""
    from torch.distributed._tools.mem_tracker import MemTracker

    optimizer = torch.optim.Adam(model.parameters())

    def step() -> None:
        model(x).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    tracker = MemTracker()
    tracker.track_external(model, optimizer, x)
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    excluded = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, tuple[int, torch.Tensor]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in excluded:
            seen.setdefault(key, (t.untyped_storage().nbytes(), t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return peak, sum(n for n, _ in seen.values())


def torchinfo_total(model: torch.nn.Module, x: torch.Tensor) -> int:
    import torchinfo

    stats = torchinfo.summary(model, input_data=x, verbose=0, mode="train")
    return stats.total_input + stats.total_output_bytes + stats.total_param_bytes


def accuracy() -> None:
    torch.set_num_threads(1)
    print(
        "| model (batch) | truth: peak (MemTracker) | ours | torchinfo | 4 x weights | "
        "saved for backward | our activations | ours / truth | torchinfo / truth | 4 x weights / truth |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (layers, shape) in ZOO.items():
        traced = trace_model(ModelSpec.model_validate({"layers": layers}), shape)
        memory = estimate_memory(traced, AdamSpec(), "cpu").memory
        torch.manual_seed(0)
        model = traced.spec.build()
        x = torch.randn(shape)
        peak, saved = measured(model, x)
        info = torchinfo_total(traced.spec.build(), x)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        rule = 4 * weights
        ours = memory.training_peak_bytes
        print(
            f"| {name} | {peak / MIB:.1f} MiB | {ours / MIB:.1f} MiB | {info / MIB:.1f} MiB "
            f"| {rule / MIB:.1f} MiB "
            f"| {saved / MIB:.1f} MiB | {memory.breakdown.activations / MIB:.1f} MiB | {ours / peak:.3f} "
            f"| {info / peak:.2f} | {rule / peak:.3f} |",
            flush=True,
        )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def timing(warm: int) -> None:
    cases = {
        "~7B transformer, batch 1 x 2048 tokens": (transformer_7b(), (1, 2048), "int64"),
        "ResNet-50, batch 64 x 3 x 224 x 224": (resnet50(), (64, 3, 224, 224), "float32"),
    }
    print(
        "| model | first call (wall / CPU) | warm call, median of "
        f"{warm} (wall / CPU) | RSS growth: first call, warm calls | training peak |"
    )
    print("|---|---|---|---|---|")
    for name, (spec, shape, dtype) in cases.items():
        model = ModelSpec.model_validate(spec)
        runs, rss_first = [], rss()
        for i in range(warm + 1):
            if i == 1:
                rss_warm = rss()
            wall, cpu = time.perf_counter(), time.thread_time()
            traced = trace_model(model, shape, dtype)
            answer = summary(traced, estimate_memory(traced, AdamSpec(), "cuda"))
            runs.append((time.perf_counter() - wall, time.thread_time() - cpu))
        growth = rss() - rss_warm
        first = runs[0]
        wall_med = statistics.median(r[0] for r in runs[1:])
        cpu_med = statistics.median(r[1] for r in runs[1:])
        peak = answer.memory.training_peak_bytes
        print(
            f"| {name} | {first[0]:.2f} s / {first[1]:.2f} s | {wall_med:.2f} s / {cpu_med:.2f} s "
            f"| {(rss_warm - rss_first) / MIB:.0f} MiB, {growth / MIB:.0f} MiB "
            f"| {peak / (1 << 30):.1f} GiB ({answer.memory.peak_phase}) |",
            flush=True,
        )


def plain(runs: int) -> None:
    """The summary without ``training``: run on two checkouts to see it costs what it did."""
    cases = {
        "~7B transformer, batch 1 x 2048 tokens": (transformer_7b(), (1, 2048), "int64"),
        "ResNet-50, batch 64 x 3 x 224 x 224": (resnet50(), (64, 3, 224, 224), "float32"),
    }
    print(f"| model | summary without training: CPU time, median of {runs} warm calls |")
    print("|---|---|")
    for name, (spec, shape, dtype) in cases.items():
        model = ModelSpec.model_validate(spec)
        summarize(model, shape, dtype)
        cpu = []
        for _ in range(runs):
            start = time.thread_time()
            summarize(model, shape, dtype)
            cpu.append(time.thread_time() - start)
        print(f"| {name} | {statistics.median(cpu):.3f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["accuracy", "timing", "plain"], required=True)
    parser.add_argument("--warm", type=int, default=3)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average {' '.join(load)}"
    )
    print(f"command: .venv/bin/python bench/memory_estimate.py --part {args.part}\n")
    if args.part == "accuracy":
        accuracy()
    elif args.part == "timing":
        timing(args.warm)
    else:
        plain(5)


if __name__ == "__main__":
    main()

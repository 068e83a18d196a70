"""Time and peak memory of a model summary: ours (meta device) vs torchinfo (real CPU tensors).

Run by hand, not in CI (about 5 minutes on 2 cores for the first two cases, 15 for all):

    .venv/bin/python bench/summary_vs_torchinfo.py            # all cases, 3 runs each
    .venv/bin/python bench/summary_vs_torchinfo.py --runs 5 --cases resnet18_b1 resnet50_b1

Models, each specified once in the spec language (the torchvision ones with exactly torchvision's
parameter counts, asserted):
- ResNet-50 (bottleneck residual blocks, 25,557,032 parameters) at batch 64 and 1, 3x224x224;
- a ~6.7e9-parameter transformer: token embedding (32,000 x 4096), 32 TransformerEncoderLayers
  (d_model 4096, 32 heads, feed-forward 16384), LayerNorm and a linear head, 2048 tokens;
- ResNet-18 (basic residual blocks, 11,689,512 parameters) at batch 1 and 64;
- VGG-16 (configuration D, 138,357,544 parameters) at batch 64;
- a 12-layer BERT-base-sized encoder (vocabulary 30,522, d_model 768, 12 heads, feed-forward
  3072, tied nothing: 131,968,314 parameters), one sequence of 512 token ids.

Ways to summarise, each measured in a fresh subprocess (so peak RSS is the case's own):
- ``summarize``: ``app.analysis.summarize(spec, shape)`` in process;
- ``http``: one ``POST /v1/models/summary`` round trip through ``TestClient`` (validation, limits,
  tracing, JSON), with the summary cache off so every call traces;
- ``torchinfo``: ``torchinfo.summary`` on the same model built for real on the CPU from the
  inferred spec (build time reported apart). The 7B model's weights alone are 27 GB, more than
  this machine has: the attempt runs under an address-space cap (``resource.setrlimit``) and its
  failure is reported.

Per process: the first call ("cold": lazy imports, first meta kernels) and then the median of
``--warm`` further calls ("warm", what a running server sees). Reported: the median over
``--runs`` processes of each figure, peak RSS (``ru_maxrss``) and ratios torchinfo / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


# -- the models, in the spec language -------------------------------------------------------------


def conv_bn(out: int, k: int, stride: int = 1, relu: bool = True) -> list[dict]:
    layers = [
        {
            "type": "Conv2d",
            "out_channels": out,
            "kernel_size": k,
            "stride": stride,
            "padding": k // 2,
            "bias": False,
        },
        {"type": "BatchNorm2d"},
    ]
    return [*layers, {"type": "ReLU"}] if relu else layers


def bottleneck(width: int, stride: int, project: bool) -> list[dict]:
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 conv), then the ReLU after the sum."""
    block: dict = {
        "type": "Residual",
        "layers": [*conv_bn(width, 1), *conv_bn(width, 3, stride), *conv_bn(4 * width, 1, relu=False)],
    }
    if project:
        block["shortcut"] = conv_bn(4 * width, 1, stride, relu=False)
    return [block, {"type": "ReLU"}]


def basic_block(width: int, stride: int, project: bool) -> list[dict]:
    """torchvision's BasicBlock: two 3x3 conv-BN (ReLU between), then the ReLU after the sum."""
    block: dict = {"type": "Residual", "layers": [*conv_bn(width, 3, stride), *conv_bn(width, 3, relu=False)]}
    if project:
        block["shortcut"] = conv_bn(width, 1, stride, relu=False)
    return [block, {"type": "ReLU"}]


def resnet18() -> dict:
    layers = [*conv_bn(64, 7, 2), {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1}]
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(2):
            layers += basic_block(width, 2 if stage and not i else 1, project=bool(stage) and not i)
    layers += [
        {"type": "AdaptiveAvgPool2d", "output_size": 1},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 1000},
    ]
    return {"layers": layers}


def vgg16() -> dict:
    """torchvision's VGG-16 (configuration D, no batch norm)."""
    layers: list[dict] = []
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            layers += [
                {"type": "Conv2d", "out_channels": width, "kernel_size": 3, "padding": 1},
                {"type": "ReLU"},
            ]
        layers.append({"type": "MaxPool2d", "kernel_size": 2, "stride": 2})
    layers += [{"type": "AdaptiveAvgPool2d", "output_size": 7}, {"type": "Flatten"}]
    for width in (4096, 4096):
        layers += [{"type": "Linear", "out_features": width}, {"type": "ReLU"}, {"type": "Dropout"}]
    return {"layers": [*layers, {"type": "Linear", "out_features": 1000}]}


def transformer_12() -> dict:
    """A BERT-base-sized encoder: 12 layers, d_model 768, 12 heads, feed-forward 3072."""
    block = {"type": "TransformerEncoderLayer", "nhead": 12, "dim_feedforward": 3072, "activation": "gelu"}
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": 30522, "embedding_dim": 768},
            *[block] * 12,
            {"type": "LayerNorm"},
            {"type": "Linear", "out_features": 30522},
        ]
    }


def resnet50() -> dict:
    layers = [*conv_bn(64, 7, 2), {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1}]
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        for i in range(blocks):
            layers += bottleneck(width, 2 if stage and not i else 1, project=i == 0)
    layers += [
        {"type": "AdaptiveAvgPool2d", "output_size": 1},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 1000},
    ]
    return {"layers": layers}


def transformer_7b() -> dict:
    block = {"type": "TransformerEncoderLayer", "nhead": 32, "dim_feedforward": 16384, "activation": "gelu"}
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": 32000, "embedding_dim": 4096},
            *[block] * 32,
            {"type": "LayerNorm"},
            {"type": "Linear", "out_features": 32000},
        ]
    }


CASES = {
    "resnet50_b64": {"model": resnet50(), "input_shape": [64, 3, 224, 224], "input_dtype": "float32"},
    "transformer_7b": {"model": transformer_7b(), "input_shape": [1, 2048], "input_dtype": "int64"},
    "resnet18_b1": {"model": resnet18(), "input_shape": [1, 3, 224, 224], "input_dtype": "float32"},
    "resnet18_b64": {"model": resnet18(), "input_shape": [64, 3, 224, 224], "input_dtype": "float32"},
    "resnet50_b1": {"model": resnet50(), "input_shape": [1, 3, 224, 224], "input_dtype": "float32"},
    "vgg16_b64": {"model": vgg16(), "input_shape": [64, 3, 224, 224], "input_dtype": "float32"},
    "transformer_12l": {"model": transformer_12(), "input_shape": [1, 512], "input_dtype": "int64"},
}
# torchvision's published parameter counts: the specs above are those architectures.
PUBLISHED_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "vgg16": 138_357_544}
TORCHINFO_CAP_BYTES = 8 * GIB  # address-space cap for the torchinfo attempt on the 7B model


# -- one measurement, in a child process ---------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(case: str, mode: str, warm: int) -> dict:
    """Runs in a fresh process: import, then time the first call and ``warm`` more."""
    if mode == "http":
        os.environ["MB_SUMMARY_CACHE_SIZE"] = "0"  # every request traces
    if mode == "torchinfo" and case == "transformer_7b":
        resource.setrlimit(resource.RLIMIT_AS, (TORCHINFO_CAP_BYTES, TORCHINFO_CAP_BYTES))
    import torch

    from app.analysis import summarize
    from layers import ModelSpec
    from layers.analysis.trace import DTYPES, trace_model

    torch.set_num_threads(os.cpu_count() or 1)
    body = CASES[case]
    spec = ModelSpec.model_validate(body["model"])
    shape, dtype = tuple(body["input_shape"]), body["input_dtype"]
    result: dict = {"baseline_rss_mib": peak_rss_mib()}

    if mode == "summarize":

        def call() -> int:
            return summarize(spec, shape, dtype).total_params

    elif mode == "http":
        from fastapi.testclient import TestClient

        from app.main import app

        client = TestClient(app)  # no lifespan: no job store, no Ray
        result["baseline_rss_mib"] = peak_rss_mib()

        def call() -> int:
            response = client.post("/v1/models/summary", json=body)
            assert response.status_code == 200, response.text[:500]
            return response.json()["total_params"]

    else:
        import torchinfo

        traced = trace_model(spec, shape, dtype)
        torch.manual_seed(0)
        start = time.perf_counter()
        try:
            model = traced.spec.build()  # on the CPU, PyTorch's own initialisation
        except (RuntimeError, MemoryError) as error:
            message = str(error).splitlines()[0]
            if "can't allocate memory" in message:  # the allocator's message is long; keep its gist
                message = "DefaultCPUAllocator: can't allocate memory"
            result.update(
                failed=f"{type(error).__name__}: {message[:160]}",
                failed_after_s=time.perf_counter() - start,
                peak_rss_mib=peak_rss_mib(),
            )
            return result
        result["build_s"] = time.perf_counter() - start
        if dtype.startswith("int"):
            data = torch.randint(0, 1000, shape, dtype=DTYPES[dtype])
        else:
            data = torch.randn(shape, dtype=DTYPES[dtype])

        def call() -> int:
            stats = torchinfo.summary(model, input_data=data, verbose=0)
            result["torchinfo_mult_adds"] = int(stats.total_mult_adds)
            return int(stats.total_params)

    start = time.perf_counter()
    result["total_params"] = call()
    result["cold_s"] = time.perf_counter() - start
    times = []
    for _ in range(warm):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    result["warm_s"] = statistics.median(times) if times else None
    result["peak_rss_mib"] = peak_rss_mib()
    if mode == "summarize":
        summary = summarize(spec, shape, dtype)
        result.update(
            mult_adds=summary.mult_adds, param_bytes=summary.param_bytes, act_bytes=summary.activation_bytes
        )
    return result


# -- the driver -------------------------------------------------------------------------------


def run_child(case: str, mode: str, warm: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", case, mode, "--warm", str(warm)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        mem_gib = int(mem.split()[1]) / 2**20
    except OSError:
        mem_gib = float("nan")
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {mem_gib:.1f} GiB RAM"


def versions() -> str:
    from importlib.metadata import version

    names = ["torch", "torchinfo", "fastapi", "pydantic", "starlette"]
    return f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if unit == "s" else f"{value:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per case and mode")
    parser.add_argument("--warm", type=int, default=3, help="timed calls after the first, per process")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.warm)))
        return

    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"command: .venv/bin/python bench/summary_vs_torchinfo.py {' '.join(sys.argv[1:])}".rstrip())
    print("load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    started = time.perf_counter()
    rows = []
    for case in args.cases:
        results: dict[str, list[dict]] = {}
        for mode in ("summarize", "http", "torchinfo"):
            big = case == "transformer_7b" and mode == "torchinfo"
            runs, warm = (1, 0) if big else (args.runs, 1 if mode == "torchinfo" else args.warm)
            results[mode] = [run_child(case, mode, warm, timeout=300) for _ in range(runs)]
            for r in results[mode]:
                print(f"  {case} {mode}: {json.dumps(r)}", flush=True)
        ours = results["summarize"][0]
        published = PUBLISHED_PARAMS.get(case.split("_")[0])
        if published is not None:
            assert ours.get("total_params") == published, (case, ours)
        info = results["torchinfo"]
        for mode in ("summarize", "http"):
            rows.append(
                (
                    case,
                    mode,
                    median_of(results[mode], "cold_s"),
                    median_of(results[mode], "warm_s"),
                    median_of(results[mode], "peak_rss_mib"),
                )
            )
        rows.append(
            (
                case,
                "torchinfo",
                median_of(info, "cold_s"),
                median_of(info, "warm_s"),
                median_of(info, "peak_rss_mib"),
                median_of(info, "build_s"),
                info[0].get("failed"),
                info[0].get("failed_after_s"),
                ours,
            )
        )

    print()
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), end="; ")
    print(f"the benchmark took {time.perf_counter() - started:.0f} s")
    print()
    print("| model | way | first call | warm call (median) | peak RSS | torchinfo ÷ this (warm time, RSS) |")
    print("|---|---|---|---|---|---|")
    by_case: dict[str, dict[str, tuple]] = {}
    for row in rows:
        by_case.setdefault(row[0], {})[row[1]] = row
    for case, modes in by_case.items():
        info = modes["torchinfo"]
        for mode in ("summarize", "http"):
            _, _, cold, warm, rss = modes[mode]
            if info[3] and warm and info[4] and rss:
                speedup = info[3] / warm  # below 10x, two significant digits (batch 1 can be < 1x)
                speed = f"{speedup:,.0f}x" if speedup >= 10 else f"{speedup:.2g}x"
                ratio = f"{speed} time, {info[4] / rss:.1f}x memory"
            else:
                ratio = "torchinfo cannot run"
            print(f"| {case} | {mode} | {fmt(cold)} | {fmt(warm)} | {fmt(rss, 'MiB')} | {ratio} |")
        _, _, cold, warm, rss, build, failed, failed_after, ours = info
        if failed:
            need = (ours.get("param_bytes", 0) + ours.get("act_bytes", 0)) / GIB
            print(
                f"| {case} | torchinfo | building the model on CPU failed after {failed_after:.1f} s "
                f"({failed}; cap {TORCHINFO_CAP_BYTES / GIB:.0f} GiB address space) | - | "
                f"{fmt(rss, 'MiB')} | "
                f"needs >= {need:.1f} GiB (weights + activations) |"
            )
        else:
            print(
                f"| {case} | torchinfo (+{build:.2f} s to build on CPU) | {fmt(cold)} | {fmt(warm)} | "
                f"{fmt(rss, 'MiB')} | 1 |"
            )


if __name__ == "__main__":
    main()

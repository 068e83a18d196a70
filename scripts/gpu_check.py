"""End-to-end check of the GPU path: a training job with ``"device": "cuda"`` on a machine (or a
Ray cluster) that has one.

    .venv/bin/python scripts/gpu_check.py                      # in-process app, embedded Ray
    .venv/bin/python scripts/gpu_check.py --url http://host:8000 [--api-key KEY]   # a running API

Checks, each printed as it runs: the cluster offers a GPU; a ``cuda`` job trains the digits CNN
to >= 0.9 validation accuracy and reports a ``cuda`` device and its Ray node; an ``auto`` job
lands on the GPU too; whether the same seed twice gives the same history is reported as
``[info]``, not checked (cuDNN and cuBLAS may pick non-deterministic kernels; see the README).
Exit status 0 when every required check passes, 1 when one fails, 2 when there is no GPU (a
``cuda`` job must then be refused at once with a 422 at ``device``).

Training memory (reported, target within 10%): for the zoo of ``bench/memory_estimate.py``, the
estimate's ``training_peak_bytes`` (device "cuda", traced on meta) against
``torch.cuda.max_memory_allocated`` over a real steady-state Adam step on this process's GPU,
printed as a table for bench/README.md. Skipped, saying so, when this process has no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.examples import digits_job


def body(device: str, seed: int = 0) -> dict[str, Any]:
    return digits_job(epochs=8, seed=seed, device=device)


def check(ok: bool, what: str, detail: object = "") -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {what} {detail}".rstrip(), flush=True)
    return ok


def train_step(model: Any, optimizer: Any, x: Any) -> None:
    """One step with the estimate's stand-in loss (it keeps and returns output-sized tensors)."""
    model(x).float().pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def memory_table() -> None:
    """The estimate's training peak against what CUDA's allocator really peaked at, per model."""
    import torch

    if not torch.cuda.is_available():
        print("[skip] training memory vs torch.cuda.max_memory_allocated: no CUDA device in this process")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from memory_estimate import ZOO

    from layers import ModelSpec
    from layers.analysis.memory import estimate_memory
    from layers.analysis.trace import trace_model
    from layers.training.optimizers import AdamSpec

    device = torch.device("cuda")
    print("| model (batch) | estimate (cuda) | max_memory_allocated | estimate / measured | within 10% |")
    print("|---|---|---|---|---|")
    for name, (layers, shape) in ZOO.items():
        traced = trace_model(ModelSpec.model_validate({"layers": layers}), shape)
        estimate = estimate_memory(traced, AdamSpec(), "cuda").memory.training_peak_bytes
        torch.manual_seed(0)
        with torch.device(device):
            model = traced.spec.build()
        x = torch.randn(shape, device=device)
        optimizer = torch.optim.Adam(model.parameters())
        train_step(model, optimizer, x)  # the optimizer's state is made here
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, optimizer, x)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated(device)
        ratio = estimate / measured
        mib = 1 << 20
        print(
            f"| {name} | {estimate / mib:.1f} MiB | {measured / mib:.1f} MiB | {ratio:.3f} "
            f"| {'yes' if abs(ratio - 1) <= 0.1 else 'no'} |",
            flush=True,
        )
        del model, optimizer, x
        torch.cuda.empty_cache()


def run(client: Any) -> int:
    ready = client.get("/readyz").json()
    print("readyz:", json.dumps(ready), flush=True)
    started = time.perf_counter()
    first = client.post("/v1/train", json=body("cuda"))
    if first.status_code == 422:
        [error] = first.json()["detail"]
        refused = check(
            error["loc"] == ["body", "device"], "no GPU here: a cuda job is refused at once", error["msg"]
        )
        return 2 if refused else 1
    job = first.json()
    wall = time.perf_counter() - started
    steps = job["history"][-1]["step"] if job.get("history") else 0
    results = [
        check(
            first.status_code == 200 and job["status"] == "succeeded", "cuda job succeeded", job.get("error")
        ),
        check(str(job.get("device", "")).startswith("cuda"), "ran on", job.get("device")),
        check(job.get("node") is not None, "on Ray node", json.dumps(job.get("node"))),
        check(
            (job.get("metrics") or {}).get("val_accuracy", 0) >= 0.9,
            "digits validation accuracy >= 0.9:",
            (job.get("metrics") or {}).get("val_accuracy"),
        ),
    ]
    if job.get("duration_s"):
        print(f"      {steps} steps in {job['duration_s']:.2f} s on the worker ({wall:.2f} s wall, cold)")
    auto = client.post("/v1/train", json=body("auto")).json()
    results.append(check(str(auto.get("device", "")).startswith("cuda"), "auto picked", auto.get("device")))
    again = client.post("/v1/train", json=body("cuda")).json()
    same = again.get("history") == job.get("history")
    # Reported, not required: CUDA training is not deterministic (README, Training).
    print(f"[info] same seed, same history on cuda: {'yes' if same else 'no'}", flush=True)
    if again.get("duration_s"):
        seconds = again["duration_s"]
        print(f"      warm: {steps} steps in {seconds:.2f} s ({steps / seconds:.0f} steps/s)")
    return 0 if all(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running API; default: the app in this process")
    parser.add_argument("--api-key", help="X-API-Key, if the API is locked")
    args = parser.parse_args()
    memory_table()
    if args.url:
        import httpx

        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        with httpx.Client(base_url=args.url, headers=headers, timeout=600) as client:
            return run(client)
    import torch
    from fastapi.testclient import TestClient

    from app.main import app

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}", flush=True)
    if torch.cuda.is_available():
        print("GPU:", torch.cuda.get_device_name(0), flush=True)
    with TestClient(app) as client:
        return run(client)


if __name__ == "__main__":
    sys.exit(main())

"""What the job service costs over plain PyTorch: training steps/s and job dispatch latency.

Run by hand, not in CI (about a minute on 2 cores):

    .venv/bin/python bench/train_overhead.py                 # 5 runs of each
    .venv/bin/python bench/train_overhead.py --runs 3 --epochs 10

The work: a small CNN (Conv 16 -> MaxPool -> Conv 32 -> Linear 10, ~24k parameters) on the
8x8 digits (1437 training samples, batch 64, Adam, one torch thread), every epoch followed by
a validation pass, as a job does. Timed three ways, interleaved run by run, after a warm-up of each:

- ``plain``: the loop written plainly in PyTorch in this process: load, split, build, train,
  validate; ``time.perf_counter`` around all of it.
- ``train()``: ``app.jobs.train.train`` in this process (the loop a worker runs: payload
  validation, events), timed the same way.
- ``job``: ``POST /v1/train`` through the app (``TestClient``, real lifespan, embedded Ray) on a
  warm worker; the job's own ``duration_s`` (worker start to finish, what the plain loop does)
  and the wall time of the whole request (adds validation, the meta trace, dispatch, and the
  server's 0.2 s polling of the store).

Dispatch latency: a 1-epoch job's ``started_at - created_at`` (server clocks: from the stored
job to the worker's first event), median over ``--dispatch`` jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.examples import DIGITS_CNN as MODEL
from app.examples import digits_job

BATCH, LR, SEED = 64, 0.003, 0


def plain(epochs: int) -> tuple[float, int]:
    """The same training, written plainly; (seconds, steps)."""
    start = time.perf_counter()
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_val = round(len(x) * 0.2)
    x_val, y_val, x_train, y_train = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )
    loss_fn, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=LR)
    shuffle, steps = torch.Generator().manual_seed(SEED), 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=shuffle)
        for i in range(0, len(x_train), BATCH):
            batch = perm[i : i + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            for i in range(0, len(x_val), BATCH):
                loss_fn(model(x_val[i : i + BATCH]), y_val[i : i + BATCH]).item()
    return time.perf_counter() - start, steps


def job_body(epochs: int) -> dict:
    return digits_job(
        MODEL, optimizer={"type": "Adam", "lr": LR}, epochs=epochs, batch_size=BATCH, seed=SEED, device="cpu"
    )


def in_process(epochs: int) -> float:
    from app.jobs.plan import plan_job
    from app.jobs.train import train
    from app.schemas.jobs import JobCreate

    payload = plan_job(JobCreate.model_validate(job_body(epochs))).payload
    start = time.perf_counter()
    events = list(train(payload))
    assert events[-1].kind == "done", events[-1]
    return time.perf_counter() - start


@contextlib.contextmanager
def stopping_embedded_ray() -> Iterator[None]:
    """The embedded Ray outlives the app by design: stop this benchmark's at the end."""
    try:
        yield
    finally:
        from app.jobs import ray_runtime

        ray_runtime.stop_embedded(Path(os.environ["MB_DATA_DIR"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dispatch", type=int, default=10)
    parser.add_argument(
        "--gap", type=float, default=0, help="seconds between dispatch jobs (Ray refills its warm workers)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["MB_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-jobs-")

    from fastapi.testclient import TestClient

    from app.main import app

    plain_s, train_s, job_s, wall_s, dispatch_s = [], [], [], [], []
    steps = plain(1)[1] * args.epochs
    with stopping_embedded_ray(), TestClient(app) as client:

        def run(epochs: int) -> tuple[dict, float]:
            # POST /v1/train: the server waits with 0.2 s asyncio sleeps. (A client polling GET
            # every few ms through TestClient would run the whole app in this process, on the
            # same 2 cores as the worker, and slow the job it measures.)
            start = time.perf_counter()
            job = client.post("/v1/train", json=job_body(epochs)).json()
            assert job["status"] == "succeeded", job["error"]
            return job, time.perf_counter() - start

        plain(1), in_process(1), run(1)  # warm-up: imports, Ray, the worker process, first kernels
        for _ in range(args.runs):  # interleaved, so that a busy moment hits all three alike
            plain_s.append(plain(args.epochs)[0])
            train_s.append(in_process(args.epochs))
            job, wall = run(args.epochs)
            job_s.append(job["duration_s"])
            wall_s.append(wall)
        for _ in range(args.dispatch):
            time.sleep(args.gap)
            job, _ = run(1)
            dispatch_s.append(_seconds(job["started_at"]) - _seconds(job["created_at"]))

    med = statistics.median
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {steps} steps ({args.epochs} epochs), 1 thread")
    print(f"medians of {args.runs} runs\n")
    print("| way | seconds | steps/s | vs plain |")
    print("|---|---|---|---|")
    for name, times in [
        ("plain PyTorch loop, in process", plain_s),
        ("`train()` (the worker's loop), in process", train_s),
        ("job on a Ray worker: its `duration_s`", job_s),
        ("job, the whole `POST /v1/train` (client wall time)", wall_s),
    ]:
        t = med(times)
        print(f"| {name} | {t:.3f} | {steps / t:.0f} | {t / med(plain_s) - 1:+.1%} |")
    ms = sorted(s * 1000 for s in dispatch_s)
    print(
        f"\ndispatch latency (created -> worker started), median of {args.dispatch}: "
        f"{med(ms):.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f})"
    )


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()

"""The first epoch of a job on an uploaded ~100 MB dataset, against a plain PyTorch loop reading
the same file.

A random float32 NPZ (``--samples`` x ``--features``, labels from a linear teacher) is uploaded to
the app in-process (a job store, no Ray), and a job on it (a Linear + ReLU + Linear model, Adam,
``--batch-size``) is planned and trained by the loop a worker runs (``app.jobs.train.train``): the
figure is the time from calling it to its first epoch's event, which covers reading the file,
the split, building the model, the epoch and the validation pass. The plain loop does the same
by hand: ``numpy.load`` of the stored file, ``torch.from_numpy``, the same seeded split, one epoch
and a validation pass. Both on the CPU, one thread (the workers' default). Medians of
``--repeat``.

    .venv/bin/python bench/dataset_first_epoch.py --repeat 3
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from app.core.config import settings  # noqa: E402
from app.datasets.description import Description  # noqa: E402
from app.jobs.engine import JobEngine  # noqa: E402
from app.jobs.events import EpochEvent  # noqa: E402
from app.jobs.plan import plan_job  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.jobs.train import train  # noqa: E402
from app.main import app  # noqa: E402
from app.schemas.jobs import JobCreate  # noqa: E402

HIDDEN, CLASSES = 64, 10


def make_npz(samples: int, features: int) -> bytes:
    g = np.random.default_rng(0)
    x = g.standard_normal((samples, features), dtype=np.float32)
    y = (x @ g.standard_normal((features, CLASSES), dtype=np.float32)).argmax(axis=1)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def job_body(dataset_id: str, batch_size: int) -> dict:
    model = {
        "layers": [
            {"type": "Linear", "out_features": HIDDEN},
            {"type": "ReLU"},
            {"type": "Linear", "out_features": CLASSES},
        ]
    }
    return {
        "model": model,
        "dataset": {"id": dataset_id, "inputs": "x", "targets": "y"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "Adam", "lr": 0.001},
        "epochs": 1,
        "batch_size": batch_size,
        "device": "cpu",
    }


def ours(body: dict, description: Description) -> float:
    payload = plan_job(JobCreate.model_validate(body), None, description).payload
    started = time.perf_counter()
    for event in train(payload):
        if isinstance(event, EpochEvent):
            return time.perf_counter() - started
    raise RuntimeError(f"the job failed: {event}")


def plain(path: Path, batch_size: int, features: int) -> float:
    started = time.perf_counter()
    with np.load(path, allow_pickle=False) as npz:
        x, y = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"])
    n = len(x)
    n_val = round(n * 0.2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train_rows, val_rows = order[n_val:], order[:n_val]
    x_train, y_train, x_val, y_val = x[train_rows], y[train_rows], x[val_rows], y[val_rows]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(features, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    shuffle = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    model.train()
    for start in range(0, len(x_train), batch_size):
        batch = shuffle[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[batch]), y_train[batch])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x_val), batch_size):
            loss_fn(model(x_val[start : start + batch_size]), y_val[start : start + batch_size])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=51_200)
    parser.add_argument("--features", type=int, default=512)  # 51200 x 512 float32: 105 MB
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(settings.worker_threads)
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        settings.data_dir = Path(tmp)
        app.state.jobs = JobEngine(JobStore(Path(tmp)))
        data = make_npz(args.samples, args.features)
        answer = TestClient(app).post("/v1/datasets", files={"file": ("big.npz", data)}).json()
        description = Description.model_validate(answer)
        path = Path(tmp) / "datasets" / answer["id"]
        body = job_body(answer["id"], args.batch_size)
        timings: dict[str, list[float]] = {"job": [], "plain": []}
        for _ in range(args.repeat):
            timings["job"].append(ours(body, description))
            timings["plain"].append(plain(path, args.batch_size, args.features))
        app.state.jobs.store.close()
    job, torch_loop = statistics.median(timings["job"]), statistics.median(timings["plain"])
    print(
        f"{platform.system()} {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"dataset: {len(data) / 1e6:.1f} MB NPZ, {args.samples} x {args.features} float32")
    print(f"first epoch, job loop:   {job:.2f} s (runs {[round(t, 2) for t in timings['job']]})")
    print(f"first epoch, plain loop: {torch_loop:.2f} s (runs {[round(t, 2) for t in timings['plain']]})")
    print(f"job / plain: {job / torch_loop:.2f}x")


if __name__ == "__main__":
    main()

"""The training loop a worker runs: a plain PyTorch loop that yields its progress as dicts.

It runs inside a Ray task (see ``app.jobs.engine``) but knows nothing of Ray, so it can be
tested and benchmarked in-process. The payload is plain JSON made by ``app.jobs.plan`` and is
validated again here: the worker trusts nothing it is sent.

Events, in order: ``started`` (device, node), ``progress`` every N steps, ``epoch`` after each
epoch's validation, then ``done`` (final metrics) or ``failed`` (a clear reason).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from app.jobs.datasets import AnyDataset
from app.jobs.measure import JobMemory
from app.jobs.memory_guard import MemoryGuard
from layers import ModelSpec
from layers.losses import AnyLoss, LossSpec
from layers.optimizers import AnyOptimizer


class TrainPayload(BaseModel):
    """What a worker is sent: an inferred model spec and everything else it needs, as JSON."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec  # every size already inferred by the API's trace
    output_shape: list[int]  # the model's output per sample, from that trace
    dataset: AnyDataset
    loss: AnyLoss
    optimizer: AnyOptimizer
    epochs: int
    batch_size: int
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    time_limit_s: float
    progress_every: int
    threads: int
    memory_estimate_bytes: int | None = None  # the plan's estimate, reported beside the measurement
    memory_allowance_bytes: int | None = None  # the worker fails the job past this (app.jobs.memory_guard)


def pick_device(requested: str) -> torch.device:
    """``cuda`` when asked for or when ``auto`` finds it, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def node_info(node_id: str = "", ip: str = "") -> dict[str, Any]:
    return {"node_id": node_id, "ip": ip, "hostname": socket.gethostname(), "pid": os.getpid()}


def train(payload: dict, node: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Train as ``payload`` says, yielding events; a failure is a ``failed`` event, never a raise."""
    started = time.monotonic()
    guard: MemoryGuard | None = None
    try:
        job = TrainPayload.model_validate(payload)
        device = pick_device(job.device)
        if device.type == "cpu":
            torch.set_num_threads(job.threads)  # one thread per worker holds up on a shared machine
        yield {"kind": "started", "device": str(device), "node": node or node_info()}
        if job.memory_allowance_bytes is None:
            yield from _train(job, device, started)
        else:
            guard = MemoryGuard(
                job.memory_allowance_bytes, device, job.memory_estimate_bytes, _host_allowance(job, device)
            )
            with guard:
                yield from _train(job, device, started)
    except _Timeout as e:
        yield {"kind": "failed", "error": str(e)}
    except Exception as e:  # anything torch refuses at run time becomes a readable reason
        first_line = (str(e).strip().splitlines() or [""])[0]
        reason = guard.explain(e) if guard is not None else None
        yield {"kind": "failed", "error": reason or f"training failed: {type(e).__name__}: {first_line}"}


CUDA_RUNTIME_HOST_BYTES = 2 << 30  # host memory the CUDA runtime itself takes in a CUDA job


def _host_allowance(job: TrainPayload, device: torch.device) -> int | None:
    """The host memory a job may grow by: its allowance, plus the CUDA runtime's on a GPU."""
    if job.memory_allowance_bytes is None or device.type != "cuda":
        return job.memory_allowance_bytes
    return job.memory_allowance_bytes + CUDA_RUNTIME_HOST_BYTES


class _Timeout(Exception):
    pass


def _train(job: TrainPayload, device: torch.device, started: float) -> Iterator[dict[str, Any]]:
    loss_spec: LossSpec = job.loss
    classification = loss_spec.task == "classification"
    x, y = job.dataset.load(classification)
    x_train, y_train, x_val, y_val = job.dataset.split(x, y)

    torch.manual_seed(job.seed)
    with torch.device(device):
        model = job.model.build()
    output_shape = tuple(job.output_shape)
    t_train = loss_spec.prepare(y_train, output_shape).to(device)
    t_val = loss_spec.prepare(y_val, output_shape).to(device)
    x_train, x_val, labels_val = x_train.to(device), x_val.to(device), y_val.to(device)
    loss_fn = loss_spec.build().to(device)
    optimizer = job.optimizer.build(model.parameters())
    memory = JobMemory(model, device, job.memory_estimate_bytes)
    shuffle = torch.Generator().manual_seed(job.seed)

    n, bs = x_train.shape[0], job.batch_size
    steps_per_epoch = math.ceil(n / bs)
    steps_total, step = steps_per_epoch * job.epochs, 0
    deadline = started + job.time_limit_s
    for epoch in range(1, job.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        total, seen = torch.zeros((), device=device), 0
        for start in range(0, n, bs):
            batch = order[start : start + bs]
            if len(batch) == 1 and bs > 1:
                continue  # a trailing single sample: BatchNorm cannot train on one
            optimizer.zero_grad(set_to_none=True)
            with memory.first_forward() if step == 0 else nullcontext():
                loss = loss_fn(model(x_train[batch]), t_train[batch])
            loss.backward()
            optimizer.step()
            if step == 0:
                memory.after_first_step(optimizer)
            total += loss.detach() * len(batch)
            seen += len(batch)
            step += 1
            if step % job.progress_every == 0:
                yield {"kind": "progress", **_progress(epoch, step, steps_total, loss.item())}
            if time.monotonic() > deadline:
                raise _Timeout(
                    f"timed out: the job ran past its {job.time_limit_s:g} s limit "
                    f"(epoch {epoch} of {job.epochs}, step {step} of {steps_total})"
                )
        train_loss = total.item() / seen
        val_loss, val_accuracy = evaluate(model, loss_fn, loss_spec, x_val, t_val, labels_val, bs)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            yield {
                "kind": "failed",
                "error": f"the loss diverged (became {train_loss}) in epoch {epoch}; "
                "try a lower learning rate",
            }
            return
        entry = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        yield {"kind": "epoch", **entry, "progress": _progress(epoch, step, steps_total, loss.item())}
    metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
    duration = time.monotonic() - started
    yield {"kind": "done", "metrics": metrics, "duration_s": duration, "memory": memory.result()}


def _progress(epoch: int, step: int, steps_total: int, loss: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "steps_total": steps_total, "loss": loss}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    loss_spec: LossSpec,
    x: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> tuple[float, float | None]:
    """Mean validation loss, and accuracy for classification losses."""
    model.eval()  # safe: nn.Module.eval() switches to evaluation mode; no code is evaluated
    total, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start : start + batch_size])
        total += loss_fn(out, targets[start : start + batch_size]) * out.shape[0]
        if loss_spec.task == "classification":
            correct += loss_spec.correct(out, labels[start : start + batch_size])
    n = x.shape[0]
    accuracy = correct.item() / n if loss_spec.task == "classification" else None
    return total.item() / n, accuracy

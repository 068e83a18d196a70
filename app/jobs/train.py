"""The training loop a worker runs: a plain PyTorch loop that yields its progress as typed events.

It runs inside a job's Ray actor (see ``app.jobs.worker``) but knows nothing of Ray, so it can
be tested and benchmarked in-process. The payload is plain JSON made by ``app.jobs.plan`` and is
validated again here: the worker trusts nothing it is sent. The events are ``app.jobs.events``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from app.jobs import checkpoint
from app.jobs.datasets import AnyDataset
from app.jobs.events import (
    Done,
    EpochEntry,
    EpochEvent,
    Failed,
    Progress,
    ProgressEvent,
    Started,
    WorkerEvent,
)
from app.jobs.measure import JobMemory
from app.jobs.memory_guard import MemoryGuard
from app.jobs.weights import serialize_weights
from layers import ModelSpec
from layers.training.losses import AnyLoss, LossSpec
from layers.training.optimizers import AnyOptimizer


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
    memory_allowance_bytes: int | None = None  # the worker fails the job past it (app.jobs.memory_guard)
    job_id: str = ""  # set by the engine at submit
    artifact_dir: str | None = None  # settings.data_dir/jobs/<id>: checkpoints; None: none kept


def pick_device(requested: str) -> torch.device:
    """``cuda`` when asked for or when ``auto`` finds it, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def node_info(node_id: str = "", ip: str = "") -> dict[str, Any]:
    return {"node_id": node_id, "ip": ip, "hostname": socket.gethostname(), "pid": os.getpid()}


def train(payload: dict, node: dict[str, Any] | None = None) -> Iterator[WorkerEvent]:
    """Train as ``payload`` says, yielding events; a failure is a ``Failed`` event, never a raise.

    With an ``artifact_dir`` the run checkpoints after every epoch and, started again, resumes
    from the newest checkpoint (same seed, same device: the same history as an uninterrupted run).
    """
    started = time.monotonic()
    guard: MemoryGuard | None = None
    try:
        job = TrainPayload.model_validate(payload)
        device = pick_device(job.device)
        if device.type == "cpu":
            torch.set_num_threads(job.threads)  # one thread per worker holds up on a shared machine
        if job.memory_allowance_bytes is None:
            yield from _train(job, device, started, node or node_info())
        else:
            allowance, estimate = job.memory_allowance_bytes, job.memory_estimate_bytes
            guard = MemoryGuard(allowance, device, estimate, _host_allowance(allowance, device))
            with guard:
                yield from _train(job, device, started, node or node_info())
    except _Timeout as e:
        yield Failed(error=str(e))
    except Exception as e:  # anything torch refuses at run time becomes a readable reason
        first_line = (str(e).strip().splitlines() or [""])[0]
        reason = guard.explain(e) if guard is not None else None
        yield Failed(error=reason or f"training failed: {type(e).__name__}: {first_line}")


CUDA_RUNTIME_HOST_BYTES = 2 << 30  # host memory the CUDA runtime itself takes in a CUDA job


def _host_allowance(allowance: int, device: torch.device) -> int:
    """The host memory a job may grow by: its allowance, plus the CUDA runtime's on a GPU."""
    return allowance + CUDA_RUNTIME_HOST_BYTES if device.type == "cuda" else allowance


class _Timeout(Exception):
    pass


def _train(job: TrainPayload, device: torch.device, started: float, node: dict) -> Iterator[WorkerEvent]:
    checkpoints = Path(job.artifact_dir) / "checkpoint" if job.artifact_dir else None
    resume = checkpoint.load(checkpoints) if checkpoints else None
    history = [EpochEntry.model_validate(entry) for entry in resume.history] if resume else []
    yield Started(device=str(device), node=node, resumed_from_epoch=resume.epoch if resume else 0)
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
    memory, first = JobMemory(model, device, job.memory_estimate_bytes), True
    shuffle = torch.Generator().manual_seed(job.seed)

    n, bs = x_train.shape[0], job.batch_size
    steps_per_epoch = math.ceil(n / bs)
    steps_total, step, spent_before = steps_per_epoch * job.epochs, 0, 0.0
    if resume:
        rng = checkpoint.restore(resume, model, optimizer, device)
        _set_rng(rng, shuffle, device)
        step, spent_before = resume.step, resume.elapsed_s
        for entry in history:  # reported again: one may have been checkpointed but not yet recorded
            progress = Progress(
                epoch=entry.epoch, step=entry.step, steps_total=steps_total, loss=entry.train_loss
            )
            yield EpochEvent(entry=entry, progress=progress)
    deadline = started + job.time_limit_s - spent_before  # earlier attempts' time counts
    for epoch in range(len(history) + 1, job.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        total, seen = torch.zeros((), device=device), 0
        for start in range(0, n, bs):
            batch = order[start : start + bs]
            if len(batch) == 1 and bs > 1:
                continue  # a trailing single sample: BatchNorm cannot train on one
            optimizer.zero_grad(set_to_none=True)
            with memory.first_forward() if first else nullcontext():
                loss = loss_fn(model(x_train[batch]), t_train[batch])
            loss.backward()
            optimizer.step()
            if first:
                memory.after_first_step(optimizer)
                first = False
            total += loss.detach() * len(batch)
            seen += len(batch)
            step += 1
            if step % job.progress_every == 0:
                yield ProgressEvent(
                    progress=Progress(epoch=epoch, step=step, steps_total=steps_total, loss=loss.item())
                )
            if time.monotonic() > deadline:
                raise _Timeout(
                    f"timed out: the job ran past its {job.time_limit_s:g} s limit "
                    f"(epoch {epoch} of {job.epochs}, step {step} of {steps_total})"
                )
        train_loss = total.item() / seen
        val_loss, val_accuracy = evaluate(model, loss_fn, loss_spec, x_val, t_val, labels_val, bs)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            yield Failed(
                error=f"the loss diverged (became {train_loss}) in epoch {epoch}; try a lower learning rate"
            )
            return
        entry = EpochEntry(
            epoch=epoch, step=step, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy
        )
        history.append(entry)
        if checkpoints:  # before the epoch is reported, so a restart never skips one
            checkpoint.save(
                checkpoints,
                model,
                optimizer,
                _rng_state(shuffle, device),
                epoch=epoch,
                step=step,
                history=[e.model_dump() for e in history],
                elapsed_s=spent_before + time.monotonic() - started,
            )
        progress = Progress(epoch=epoch, step=step, steps_total=steps_total, loss=loss.item())
        yield EpochEvent(entry=entry, progress=progress)
    # ``Done`` carries the final weights' bytes (the API stores them) and the measured memory.
    last = history[-1]
    metrics = {"train_loss": last.train_loss, "val_loss": last.val_loss, "val_accuracy": last.val_accuracy}
    measured = memory.result()  # before the weights' bytes are made: they are not the training's
    weights = serialize_weights(model, job.model, job.job_id)
    duration = spent_before + time.monotonic() - started
    yield Done(metrics=metrics, duration_s=duration, memory=measured, weights=weights)


def _rng_state(shuffle: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every random state the loop draws from: the shuffle, torch's global CPU (and CUDA) RNG."""
    state = {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict[str, torch.Tensor], shuffle: torch.Generator, device: torch.device) -> None:
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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

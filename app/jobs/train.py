"""The training loop a worker runs: a plain PyTorch loop that yields its progress as typed events.

It runs inside a job's Ray actor (see ``app.jobs.worker``) but knows nothing of Ray, so it can
be tested and benchmarked in-process. The payload is a ``TrainPayload`` that ``app.jobs.plan``
builds; the actor is sent its JSON, which is validated again here: the worker trusts nothing it
is sent. The events are ``app.jobs.events``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Generator, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from app.core.config import settings
from app.jobs import checkpoint
from app.jobs.domain import EpochResult, Metrics, NodeInfo, Progress
from app.jobs.events import Done, EpochEvent, Failed, ProgressEvent, Started, WorkerEvent
from app.jobs.measure import MemoryMeter
from app.jobs.memory_guard import MemoryGuard
from app.jobs.weights import serialize_weights
from layers import ModelSpec
from layers.training.datasets import AnyDataset
from layers.training.losses import AnyLoss, LossSpec
from layers.training.optimizers import AnyOptimizer


class TrainPayload(BaseModel):
    """What a worker is sent: an inferred model spec and everything else it needs (as JSON)."""

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


def node_info(node_id: str = "", ip: str = "") -> NodeInfo:
    return NodeInfo(node_id=node_id, ip=ip, hostname=socket.gethostname(), pid=os.getpid())


def train(payload: TrainPayload | dict[str, Any], node: NodeInfo | None = None) -> Iterator[WorkerEvent]:
    """Train as ``payload`` (or its JSON) says, yielding events; a failure is a ``Failed`` event,
    never a raise.

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


def _train(job: TrainPayload, device: torch.device, started: float, node: NodeInfo) -> Iterator[WorkerEvent]:
    checkpoints = Path(job.artifact_dir) / "checkpoint" if job.artifact_dir else None
    resume = checkpoint.load(checkpoints) if checkpoints else None
    history = [EpochResult.model_validate(entry) for entry in resume.history] if resume else []
    yield Started(device=str(device), node=node, resumed_from_epoch=resume.epoch if resume else 0)
    run = _Run.prepare(job, device)
    if resume:
        run.restore(resume)
        for entry in history:  # reported again: one may have been checkpointed but not yet recorded
            progress = Progress(
                epoch=entry.epoch, step=entry.step, steps_total=run.steps_total, loss=entry.train_loss
            )
            yield EpochEvent(entry=entry, progress=progress)
    deadline = started + job.time_limit_s - run.spent_before  # earlier attempts' time counts
    for epoch in range(len(history) + 1, job.epochs + 1):
        train_loss, last_loss = yield from run.epoch(epoch, deadline)
        val_loss, val_accuracy = evaluate(
            run.model, run.loss_fn, job.loss, run.x_val, run.t_val, run.labels_val, job.batch_size
        )
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            yield Failed(
                error=f"the loss diverged (became {train_loss}) in epoch {epoch}; try a lower learning rate"
            )
            return
        entry = EpochResult(
            epoch=epoch, step=run.step, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy
        )
        history.append(entry)
        if checkpoints:  # before the epoch is reported, so a restart never skips one
            run.save(checkpoints, history, elapsed_s=run.spent_before + time.monotonic() - started)
        progress = Progress(epoch=epoch, step=run.step, steps_total=run.steps_total, loss=last_loss)
        yield EpochEvent(entry=entry, progress=progress)
    # ``Done`` carries the final weights' bytes (the API stores them) and the measured memory.
    last = history[-1]
    metrics = Metrics(train_loss=last.train_loss, val_loss=last.val_loss, val_accuracy=last.val_accuracy)
    measured = run.memory.result()  # before the weights' bytes are made: they are not the training's
    weights = serialize_weights(run.model, job.model, job.job_id)
    duration = run.spent_before + time.monotonic() - started
    yield Done(metrics=metrics, duration_s=duration, memory=measured, weights=weights)


@dataclass
class _Run:
    """One run's model, data on the device, loss, optimizer and random state, and how far it got."""

    job: TrainPayload
    device: torch.device
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x_train: torch.Tensor
    t_train: torch.Tensor  # the targets as the loss takes them
    x_val: torch.Tensor
    t_val: torch.Tensor
    labels_val: torch.Tensor  # the validation targets as the dataset has them (for accuracy)
    memory: MemoryMeter
    shuffle: torch.Generator
    steps_total: int
    step: int = 0
    spent_before: float = 0.0  # training time of earlier attempts
    measured: bool = False  # the first step's memory has been measured

    @classmethod
    def prepare(cls, job: TrainPayload, device: torch.device) -> _Run:
        loss_spec: LossSpec = job.loss
        x, y = job.dataset.load(loss_spec.task == "classification", settings)
        x_train, y_train, x_val, y_val = job.dataset.split(x, y)
        torch.manual_seed(job.seed)
        with torch.device(device):
            model = job.model.build()
        output_shape = tuple(job.output_shape)
        t_train = loss_spec.prepare(y_train, output_shape).to(device)
        t_val = loss_spec.prepare(y_val, output_shape).to(device)
        return cls(
            job=job,
            device=device,
            model=model,
            loss_fn=loss_spec.build().to(device),
            # Frozen parameters (``trainable: false``) get no optimizer state and are never stepped.
            optimizer=job.optimizer.build([p for p in model.parameters() if p.requires_grad]),
            x_train=x_train.to(device),
            t_train=t_train,
            x_val=x_val.to(device),
            t_val=t_val,
            labels_val=y_val.to(device),
            memory=MemoryMeter(model, device, job.memory_estimate_bytes),
            shuffle=torch.Generator().manual_seed(job.seed),
            steps_total=math.ceil(x_train.shape[0] / job.batch_size) * job.epochs,
        )

    def restore(self, resume: checkpoint.Checkpoint) -> None:
        rng = checkpoint.restore(resume, self.model, self.optimizer, self.device)
        _set_rng(rng, self.shuffle, self.device)
        self.step, self.spent_before = resume.step, resume.elapsed_s

    def epoch(self, epoch: int, deadline: float) -> Generator[ProgressEvent, None, tuple[float, float]]:
        """Train one epoch, yielding progress; its mean training loss and its last step's."""
        n, bs = self.x_train.shape[0], self.job.batch_size
        self.model.train()
        order = torch.randperm(n, generator=self.shuffle).to(self.device)
        total, seen = torch.zeros((), device=self.device), 0
        for start in range(0, n, bs):
            batch = order[start : start + bs]
            if len(batch) == 1 and bs > 1:
                continue  # a trailing single sample: BatchNorm cannot train on one
            loss = self._step(batch)
            total += loss.detach() * len(batch)
            seen += len(batch)
            self.step += 1
            if self.step % self.job.progress_every == 0:
                progress = Progress(
                    epoch=epoch, step=self.step, steps_total=self.steps_total, loss=loss.item()
                )
                yield ProgressEvent(progress=progress)
            if time.monotonic() > deadline:
                raise _Timeout(
                    f"timed out: the job ran past its {self.job.time_limit_s:g} s limit "
                    f"(epoch {epoch} of {self.job.epochs}, step {self.step} of {self.steps_total})"
                )
        return total.item() / seen, loss.item()

    def _step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimizer step on ``batch`` (indices); its loss. The first one is measured."""
        self.optimizer.zero_grad(set_to_none=True)
        with nullcontext() if self.measured else self.memory.first_forward():
            loss = self.loss_fn(self.model(self.x_train[batch]), self.t_train[batch])
        loss.backward()
        self.optimizer.step()
        if not self.measured:
            self.memory.after_first_step(self.optimizer)
            self.measured = True
        return loss

    def save(self, directory: Path, history: list[EpochResult], elapsed_s: float) -> None:
        last = history[-1]
        rng = _rng_state(self.shuffle, self.device)
        history_json = [e.model_dump() for e in history]
        checkpoint.save(
            directory,
            self.model,
            self.optimizer,
            rng,
            epoch=last.epoch,
            step=self.step,
            history=history_json,
            elapsed_s=elapsed_s,
        )


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

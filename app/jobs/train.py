"""The training loop a worker runs: a plain PyTorch loop that yields its progress as typed events.

It runs inside a job's Ray actor (see ``app.jobs.worker``) but knows nothing of Ray, so it can
be tested and benchmarked in-process. The payload is a ``TrainPayload`` that ``app.jobs.plan``
builds; the actor is sent its JSON, which is validated again here: the worker trusts nothing it
is sent. The events are ``app.jobs.events``.
"""

from __future__ import annotations

import json
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
from app.datasets.uploaded import UploadedDataset, standardize
from app.jobs import checkpoint, graph_data
from app.jobs.domain import EpochResult, Metrics, NodeInfo, OutputMetrics, Progress
from app.jobs.events import Done, EpochEvent, Failed, ProgressEvent, Started, WorkerEvent
from app.jobs.measure import MemoryMeter
from app.jobs.memory_guard import MemoryGuard
from app.jobs.weights import serialize_weights
from layers import AnyModel, GraphSpec
from layers.language import io
from layers.training.datasets import DATASET_KINDS, Named, SyntheticDataset, dataset_union
from layers.training.losses import AnyLossTerm, LossSpec
from layers.training.optimizers import AnyOptimizer

WorkerDataset = dataset_union((*DATASET_KINDS, UploadedDataset))  # every kind, already checked


class TrainPayload(BaseModel):
    """What a worker is sent: an inferred model spec and everything else it needs (as JSON)."""

    model_config = ConfigDict(extra="forbid")

    model: AnyModel  # every size already inferred by the API's trace
    output_shapes: dict[str, list[int]]  # each trained output per sample, from that trace
    dataset: WorkerDataset
    dataset_file: str | None = None  # an uploaded dataset's file, on the volume every node shares
    losses: dict[str, AnyLossTerm]  # by output name, each with its weight
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
        train_loss, last_loss, train_parts = yield from run.epoch(epoch, deadline)
        val_loss, val_accuracy, val_parts = evaluate(
            run.model, run.outputs, run.x_val, run.t_val, run.labels_val, job.batch_size
        )
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            yield Failed(
                error=f"the loss diverged (became {train_loss}) in epoch {epoch}; try a lower learning rate"
            )
            return
        per_output = None
        if isinstance(job.model, GraphSpec):
            per_output = {
                name: OutputMetrics(train_loss=train_parts[name], val_loss=loss, val_accuracy=accuracy)
                for name, (loss, accuracy) in val_parts.items()
            }
        entry = EpochResult(
            epoch=epoch,
            step=run.step,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            outputs=per_output,
        )
        history.append(entry)
        if checkpoints:  # before the epoch is reported, so a restart never skips one
            run.save(checkpoints, history, elapsed_s=run.spent_before + time.monotonic() - started)
        progress = Progress(epoch=epoch, step=run.step, steps_total=run.steps_total, loss=last_loss)
        yield EpochEvent(entry=entry, progress=progress)
    # ``Done`` carries the final weights' bytes (the API stores them) and the measured memory.
    last = history[-1]
    metrics = Metrics(
        train_loss=last.train_loss,
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        outputs=last.outputs,
    )
    measured = run.memory.result()  # before the weights' bytes are made: they are not the training's
    weights = serialize_weights(run.model, job.model, job.job_id, scaling_metadata(run.scaling))
    duration = run.spent_before + time.monotonic() - started
    yield Done(metrics=metrics, duration_s=duration, memory=measured, weights=weights)


@dataclass(frozen=True)
class Output:
    """One model output the loop trains: its loss, the loss's weight in the sum, its shape."""

    spec: LossSpec
    weight: float
    fn: torch.nn.Module
    shape: tuple[int, ...]  # per sample, from the plan's trace


def outputs_of(job: TrainPayload, device: torch.device) -> dict[str, Output]:
    """The losses by output name (a sequence model's one output, weighted 1)."""
    return {
        name: Output(loss, loss.weight, loss.build().to(device), tuple(job.output_shapes[name]))  # type: ignore[attr-defined]
        for name, loss in job.losses.items()
    }


def load_data(job: TrainPayload, classification: bool) -> tuple[Named, Named]:
    """The dataset's inputs by model input name and targets by output name, on the CPU."""
    graph = job.model if isinstance(job.model, GraphSpec) else None
    if isinstance(job.dataset, UploadedDataset):
        if job.dataset_file is None:
            raise ValueError("the payload names no file for its uploaded dataset")
        x, y = job.dataset.read(Path(job.dataset_file))
        return (graph_data.as_graph_inputs(graph, x) if graph else x), y
    if graph is not None:
        if not isinstance(job.dataset, SyntheticDataset):
            raise ValueError("a graph job trains on uploaded or synthetic data")
        shapes = {name: tuple(shape) for name, shape in job.output_shapes.items()}
        return graph_data.synthetic(graph, job.dataset, dict(job.losses), shapes)
    return job.dataset.load_named(classification, settings)


@dataclass
class _Run:
    """One run's model, data on the device, losses, optimizer and random state, and how far it got."""

    job: TrainPayload
    device: torch.device
    model: torch.nn.Module
    outputs: dict[str, Output]
    optimizer: torch.optim.Optimizer
    x_train: Named
    t_train: Named  # the targets as each output's loss takes them
    x_val: Named
    t_val: Named
    labels_val: Named  # the validation targets as the dataset has them (for accuracy)
    scaling: dict[str, tuple[torch.Tensor, torch.Tensor]]  # standardized inputs' (mean, std)
    memory: MemoryMeter
    shuffle: torch.Generator
    steps_total: int
    step: int = 0
    spent_before: float = 0.0  # training time of earlier attempts
    measured: bool = False  # the first step's memory has been measured

    @property
    def samples(self) -> int:
        return next(iter(self.x_train.values())).shape[0]

    @classmethod
    def prepare(cls, job: TrainPayload, device: torch.device) -> _Run:
        outputs = outputs_of(job, device)
        classification = any(o.spec.task == "classification" for o in outputs.values())
        x, y = load_data(job, classification)
        x_train, y_train, x_val, y_val = job.dataset.split_named(x, y)
        scaling: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if isinstance(job.dataset, UploadedDataset) and job.dataset.standardize:
            x_train, x_val, scaling = standardize(x_train, x_val)
        torch.manual_seed(job.seed)
        with torch.device(device):
            model = job.model.build()

        def prepared(y: Named) -> Named:
            return {name: o.spec.prepare(y[name], o.shape).to(device) for name, o in outputs.items()}

        samples = next(iter(x_train.values())).shape[0]
        return cls(
            job=job,
            device=device,
            model=model,
            outputs=outputs,
            # Frozen parameters (``trainable: false``) get no optimizer state and are never stepped.
            optimizer=job.optimizer.build([p for p in model.parameters() if p.requires_grad]),
            x_train=_to(x_train, device),
            t_train=prepared(y_train),
            x_val=_to(x_val, device),
            t_val=prepared(y_val),
            labels_val=_to(y_val, device),
            scaling=scaling,
            memory=MemoryMeter(model, device, job.memory_estimate_bytes),
            shuffle=torch.Generator().manual_seed(job.seed),
            steps_total=math.ceil(samples / job.batch_size) * job.epochs,
        )

    def restore(self, resume: checkpoint.Checkpoint) -> None:
        rng = checkpoint.restore(resume, self.model, self.optimizer, self.device)
        _set_rng(rng, self.shuffle, self.device)
        self.step, self.spent_before = resume.step, resume.elapsed_s

    def epoch(
        self, epoch: int, deadline: float
    ) -> Generator[ProgressEvent, None, tuple[float, float, dict[str, float]]]:
        """Train one epoch, yielding progress; its mean training loss, its last step's, and each
        output's mean (unweighted)."""
        n, bs = self.samples, self.job.batch_size
        self.model.train()
        order = torch.randperm(n, generator=self.shuffle).to(self.device)
        total, seen = torch.zeros((), device=self.device), 0
        parts = {name: torch.zeros((), device=self.device) for name in self.outputs}
        for start in range(0, n, bs):
            batch = order[start : start + bs]
            if len(batch) == 1 and bs > 1:
                continue  # a trailing single sample: BatchNorm cannot train on one
            loss, losses = self._step(batch)
            total += loss.detach() * len(batch)
            for name, part in losses.items():
                parts[name] += part.detach() * len(batch)
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
        return total.item() / seen, loss.item(), {name: p.item() / seen for name, p in parts.items()}

    def _step(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step on ``batch`` (indices); its loss and each output's. The first one is
        measured."""
        self.optimizer.zero_grad(set_to_none=True)
        with nullcontext() if self.measured else self.memory.first_forward():
            out = io.run(self.model, _rows(self.x_train, batch))
            loss, losses = weighted_loss(self.outputs, out, _rows(self.t_train, batch))
        loss.backward()
        self.optimizer.step()
        if not self.measured:
            self.memory.after_first_step(self.optimizer)
            self.measured = True
        return loss, losses

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


def _to(named: Named, device: torch.device) -> Named:
    return {name: tensor.to(device) for name, tensor in named.items()}


def _rows(named: Named, rows: torch.Tensor | slice) -> Named:
    return {name: tensor[rows] for name, tensor in named.items()}


def weighted_loss(
    outputs: dict[str, Output], out: dict[str, torch.Tensor], targets: Named
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sum of each output's loss times its weight (a weight of 1 is not multiplied in), and
    each output's loss."""
    total: torch.Tensor | None = None
    losses = {}
    for name, o in outputs.items():
        losses[name] = o.fn(out[name], targets[name])
        loss = losses[name] if o.weight == 1.0 else o.weight * losses[name]
        total = loss if total is None else total + loss
    assert total is not None
    return total, losses


def scaling_metadata(scaling: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, str]:
    """The standardized inputs' statistics as weights metadata (predict applies them)."""
    if not scaling:
        return {}
    stats = {name: {"mean": m.cpu().tolist(), "std": s.cpu().tolist()} for name, (m, s) in scaling.items()}
    return {"standardize": json.dumps(stats)}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    outputs: dict[str, Output],
    x: Named,
    targets: Named,
    labels: Named,
    batch_size: int,
) -> tuple[float, float | None, dict[str, tuple[float, float | None]]]:
    """Mean validation loss (the weighted sum over outputs), accuracy (the mean over the
    classification outputs), and each output's loss and accuracy."""
    model.eval()  # safe: nn.Module.eval() switches to evaluation mode; no code is evaluated
    n = next(iter(x.values())).shape[0]
    device = next(iter(x.values())).device
    parts = {name: torch.zeros((), device=device) for name in outputs}
    correct = {
        name: torch.zeros((), device=device) for name, o in outputs.items() if o.spec.task == "classification"
    }
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        out = io.run(model, _rows(x, rows))
        count = next(iter(out.values())).shape[0]
        _, losses = weighted_loss(outputs, out, _rows(targets, rows))
        for name, loss in losses.items():
            parts[name] += loss * count
        for name in correct:
            correct[name] += outputs[name].spec.correct(out[name], labels[name][rows])
    accuracies = {name: c.item() / n for name, c in correct.items()}
    accuracy = sum(accuracies.values()) / len(accuracies) if accuracies else None
    losses = {name: p.item() / n for name, p in parts.items()}
    # The total is the weighted sum of the outputs' means (a weight of 1 is not multiplied in).
    total = sum(v if outputs[name].weight == 1.0 else outputs[name].weight * v for name, v in losses.items())
    per_output = {name: (losses[name], accuracies.get(name)) for name in outputs}
    return total, accuracy, per_output

"""Everything checked before a job is queued, and the payload its worker is sent.

The model is traced on the meta device at the training batch size against the dataset's
sample shape; the loss is checked against the model's output and the dataset's targets; the
run's memory (the training step's peak from ``layers.analysis.memory``, plus the dataset on the device)
is estimated and held against the limits. A graph model is traced at its own inputs, dimension 0
set to the batch size, and its data and losses are checked by input and output name
(``app.jobs.graph_data``). Every refusal is a ``SpecError`` whose ``loc`` is relative to the body.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass

from app.core.config import settings
from app.core.spec_limits import check_model
from app.datasets.description import Description
from app.datasets.uploaded import UploadedDataset
from app.jobs import graph_data
from app.jobs.train import TrainPayload
from app.schemas.jobs import JobCreate
from layers import GraphSpec
from layers.analysis.budget import TraceBudget
from layers.analysis.graph_trace import trace_graph
from layers.analysis.memory import TrainingMemory, estimate_memory
from layers.analysis.params import weight_bytes
from layers.analysis.trace import TracedModel, trace_model
from layers.language.base import ContainerSpec
from layers.language.errors import LimitError, ShapeError, SpecError
from layers.language.io import SEQUENCE_OUTPUT, input_names, output_names
from layers.training.datasets import DatasetInfo, SyntheticDataset
from layers.training.losses import LossSpec


@dataclass(frozen=True)
class JobPlan:
    job: JobCreate  # as it is stored: an uploaded dataset with what the plan checked (``planned``)
    payload: TrainPayload  # what the worker is sent (the engine adds the job's id and directory)
    memory_estimate_bytes: int


def plan_job(
    job: JobCreate, cancelled: threading.Event | None = None, uploaded: Description | None = None
) -> JobPlan:
    """Check ``job`` against its dataset and the limits; raise ``SpecError`` at the offending field.

    ``uploaded`` is the stored description of the job's uploaded dataset (the caller's own: the
    route looked it up). Once ``cancelled`` is set the model's trace stops
    (``layers.analysis.budget.TraceCancelled``)."""
    check_model(job.model)
    terms = job.terms()
    if isinstance(job.model, GraphSpec):
        return _plan_graph(job, job.model, terms, cancelled, uploaded)
    loss = job.loss_of_sequence()
    dataset_file = None
    if isinstance(job.dataset, UploadedDataset):
        job = _plan_upload(job, uploaded)
        dataset_file = _file_of(job.dataset)
    info = job.dataset.describe(loss.task == "classification", settings)
    _check_steps(job, info.samples)
    traced, step = _trace(job, info, cancelled)
    _check_trainable(traced)
    _check_token_ids(job, info.tokens)
    last = ("model", "layers", len(job.model.layers) - 1)
    output = tuple(traced.output_shape[1:])
    loss.check(output, info.targets, last)
    memory = _check_memory(job, traced, step, info.input_bytes)
    return _plan(job, traced, terms, {SEQUENCE_OUTPUT: list(output)}, dataset_file, memory)


def _plan(
    job: JobCreate,
    traced: TracedModel,
    terms: dict[str, LossSpec],
    outputs: dict[str, list[int]],
    dataset_file: str | None,
    memory: int,
) -> JobPlan:
    allowance = math.ceil(memory * settings.job_memory_factor) + settings.job_memory_slack_bytes
    payload = TrainPayload(
        model=traced.spec,
        output_shapes={name: outputs[name] for name in terms},
        dataset=job.dataset,
        dataset_file=dataset_file,
        losses=terms,
        optimizer=job.optimizer,
        epochs=job.epochs,
        batch_size=job.batch_size,
        seed=job.seed,
        device=job.device,
        time_limit_s=job.time_limit_s or settings.max_job_seconds,
        progress_every=settings.progress_every_steps,
        threads=settings.worker_threads,
        memory_estimate_bytes=memory,
        memory_allowance_bytes=allowance,
    )
    return JobPlan(job=job, payload=payload, memory_estimate_bytes=memory)


def _file_of(dataset: UploadedDataset) -> str:
    return str(settings.data_dir.resolve() / "datasets" / dataset.id)


def _plan_graph(
    job: JobCreate,
    graph: GraphSpec,
    terms: dict[str, LossSpec],
    cancelled: threading.Event | None,
    uploaded: Description | None,
) -> JobPlan:
    """A graph job: traced at its own inputs with the batch of ``batch_size``, its data checked by
    input and output name (``app.jobs.graph_data``)."""
    batched = {
        name: i.model_copy(update={"shape": [job.batch_size, *i.shape[1:]]})
        for name, i in graph.inputs.items()
    }
    try:
        budget = TraceBudget(settings.max_trace_seconds, cancelled)
        traced = trace_graph(graph.model_copy(update={"inputs": batched}), budget)
        device = "cpu" if job.device == "cpu" else "cuda"
        step = estimate_memory(traced, job.optimizer, device, budget=budget, inference=False).memory
    except SpecError as e:
        raise e.under("model") from e
    assert traced.graph is not None
    outputs = {name: tuple(value.shape[1:]) for name, (_, value) in traced.graph.outputs.items()}
    dataset_file = None
    if isinstance(job.dataset, UploadedDataset):
        if uploaded is None:
            raise RuntimeError("an uploaded dataset's description is looked up before the plan")
        dataset, data = graph_data.plan_uploaded(graph, job.dataset, uploaded, terms, outputs)
        job = job.model_copy(update={"dataset": dataset})
        dataset_file = _file_of(dataset)
    elif isinstance(job.dataset, SyntheticDataset):
        if job.dataset.shape is not None:
            raise SpecError(
                ("dataset", "shape"), "a graph's synthetic data takes its shapes from the graph's `inputs`"
            )
        data = graph_data.plan_synthetic(graph, job.dataset, terms, outputs)
        numel = data.samples * sum(math.prod(i.shape[1:]) for i in graph.inputs.values())
        if numel > settings.max_dataset_numel:
            raise LimitError(
                ("dataset", "samples"),
                f"{data.samples} samples of the graph's inputs are {numel} numbers; the limit is "
                f"{settings.max_dataset_numel}",
                {"limit": settings.max_dataset_numel, "got": numel},
            )
    else:
        raise SpecError(
            ("dataset", "name"),
            f"a graph model trains on uploaded or synthetic data, not on {job.dataset.name!r} "
            "(upload the arrays with POST /v1/datasets and map them by input name)",
            {"got": job.dataset.name, "expected": ["uploaded", "synthetic"]},
        )
    _check_steps(job, data.samples)
    _check_trainable(traced)
    memory = _check_memory(job, traced, step, data.input_bytes)
    shapes = {name: list(shape) for name, shape in outputs.items()}
    return _plan(job, traced, terms, shapes, dataset_file, memory)


def _plan_upload(job: JobCreate, description: Description | None) -> JobCreate:
    """The job with its uploaded dataset checked against the model's inputs and outputs."""
    assert isinstance(job.dataset, UploadedDataset)
    if description is None:
        raise RuntimeError("an uploaded dataset's description is looked up before the plan")
    first = next((spec for _, _, spec in job.model.walk() if not isinstance(spec, ContainerSpec)), None)
    embedding = getattr(first, "num_embeddings", None) is not None
    dataset = job.dataset.plan(description, input_names(job.model), output_names(job.model), embedding)
    dataset.check_targets(job.loss_of_sequence().task == "classification")
    return job.model_copy(update={"dataset": dataset})


def _check_steps(job: JobCreate, samples: int) -> None:
    """The run trains on something, within ``MB_MAX_STEPS``."""
    train_samples = job.dataset.train_samples(samples)
    if train_samples == 1 and job.batch_size > 1:
        # The loop skips a batch of one sample when batch_size > 1 (BatchNorm cannot train on one),
        # so this run would train on nothing.
        raise SpecError(
            ("batch_size",),
            f"the dataset's {samples} samples leave 1 for training (val_fraction "
            f"{job.dataset.val_fraction:g} holds out the rest), and a lone trailing sample is skipped "
            "when batch_size > 1; use more samples or batch_size 1",
            {"train_samples": train_samples, "batch_size": job.batch_size},
        )
    steps_per_epoch = math.ceil(train_samples / job.batch_size)
    steps_total = steps_per_epoch * job.epochs
    if steps_total > settings.max_steps:
        raise LimitError(
            ("epochs",),
            f"{job.epochs} epochs of {steps_per_epoch} steps are {steps_total} steps; the limit is "
            f"{settings.max_steps}",
            {"limit": settings.max_steps, "got": steps_total},
        )


def _trace(
    job: JobCreate, info: DatasetInfo, cancelled: threading.Event | None
) -> tuple[TracedModel, TrainingMemory]:
    """The model traced at a training batch of the dataset's samples, and its training step's memory."""
    try:
        budget = TraceBudget(settings.max_trace_seconds, cancelled)
        traced = trace_model(job.model, (job.batch_size, *info.sample_shape), info.dtype, budget)
        device = "cpu" if job.device == "cpu" else "cuda"
        step = estimate_memory(traced, job.optimizer, device, budget=budget, inference=False).memory
    except SpecError as e:
        raise e.under("model") from e
    return traced, step


def _check_memory(job: JobCreate, traced: TracedModel, step: TrainingMemory, data_bytes: int) -> int:
    """The run's memory estimate, within ``MB_MAX_JOB_MEMORY_BYTES``; its weights within
    ``MB_MAX_ARTIFACT_BYTES``."""
    # The training step's peak (weights, gradients, optimizer state, activations, temporaries)
    # and the whole dataset, which the worker moves to the device.
    memory = step.training_peak_bytes + data_bytes
    if memory > settings.max_job_memory_bytes:
        parts = ", ".join(f"{name} {_gib(value)}" for name, value in asdict(step.breakdown).items())
        raise LimitError(
            ("model",),
            f"training this model at batch size {job.batch_size} needs about {_gib(memory)}: a "
            f"training step with {job.optimizer.type} peaks at {_gib(step.training_peak_bytes)} ({parts}) "
            f"and the data take {_gib(data_bytes)}; the limit is {_gib(settings.max_job_memory_bytes)}",
            {"limit": settings.max_job_memory_bytes, "got": memory, "breakdown": asdict(step.breakdown)},
        )
    weights = weight_bytes(traced)
    if weights > settings.max_artifact_bytes:
        raise LimitError(
            ("model",),
            f"the trained weights would take {_gib(weights)} (parameters and buffers); the limit is "
            f"{_gib(settings.max_artifact_bytes)}",
            {"limit": settings.max_artifact_bytes, "got": weights},
        )
    return memory


def _check_trainable(traced: TracedModel) -> None:
    """A job trains parameters: a model without any, or with all of them frozen, has nothing to
    train (and torch's optimizer refuses an empty parameter list)."""
    params = list(traced.module.parameters())
    if not any(p.requires_grad for p in params):
        fix = (
            "every layer with weights has `trainable: false`; let one train"
            if params
            else "add a layer with weights, such as Linear"
        )
        raise SpecError(
            ("model",),
            f"nothing to train: this model has no trainable parameters ({fix})",
            {"trainable_params": 0, "total_params": sum(p.numel() for p in params)},
        )


def _check_token_ids(job: JobCreate, tokens: int | None) -> None:
    """Token ids must fit the Embedding that reads them (the meta trace cannot see values)."""
    if tokens is None:
        return
    loc, first = next((loc, spec) for loc, _, spec in job.model.walk() if not isinstance(spec, ContainerSpec))
    vocabulary = getattr(first, "num_embeddings", None)
    if vocabulary is not None and vocabulary < tokens:
        raise ShapeError(
            ("model", *loc, "num_embeddings"),
            f"the dataset's token ids go up to {tokens - 1} but this {first.type} has "
            f"{vocabulary} embeddings (ids 0..{vocabulary - 1})",
            {"expected_at_least": tokens, "got": vocabulary},
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if abs(n) >= 1 << 24 else f"{n / (1 << 20):.2f} MiB"

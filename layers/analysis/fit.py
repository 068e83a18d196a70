"""The largest batch whose training step fits a device: predicted from two probes, then verified.

Every probe is a full training-memory estimate on meta (``layers.analysis.memory``), which also
gives the live bytes after every operator of the step. The peak is the largest of those, and for
almost every model each is affine in the batch while the peak is not (at a small batch it comes
where the gradients are, at a large one where the activations are). So two probes (batch 1 and the
input's batch, which the caller has already estimated) give every operator's line, and the batch
where the first of them crosses the limit is the answer. It is verified against the traced peak
there and at the next batch: three traces. Only when that fails does the search gallop from the
guess to bracket the boundary and bisect the bracket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from layers.analysis.budget import TraceBudget, TraceCancelled
from layers.analysis.memory import Device, MemoryEstimate, estimate_memory
from layers.analysis.trace import TracedModel, _raised_by_torch
from layers.language.errors import ShapeError, SpecError
from layers.training.optimizers import OptimizerSpec


@dataclass
class Fit:
    max_batch_size: int  # 0 when batch 1 does not fit
    probes: dict[int, int] = field(default_factory=dict)  # batch size -> training peak bytes


class NotBatchSeparable(ShapeError):
    """The model does not run at another batch size: its loc is the request's ``input_shape``."""


def largest_batch(
    traced: TracedModel,
    optimizer: OptimizerSpec,
    device: Device,
    limit_bytes: int,
    max_batch: int,
    budget: TraceBudget | None = None,
    at_input: MemoryEstimate | None = None,
) -> Fit:
    """Largest batch (up to ``max_batch``) whose training peak is at most ``limit_bytes``.

    ``at_input`` is the estimate at the traced input's batch, if the caller has it (one probe
    less). A batch torch refuses to run the model at is ``NotBatchSeparable``.
    """
    fit = Fit(0)
    timelines: dict[int, list[int]] = {}  # batch size -> live bytes after each operator

    def probe(batch: int) -> int:
        if batch not in fit.probes:
            estimate = at_input if batch == traced.input_shape[0] and at_input else None
            estimate = estimate or _estimate(traced, optimizer, device, batch, budget)
            fit.probes[batch] = estimate.memory.training_peak_bytes
            timelines[batch] = estimate.timeline
        return fit.probes[batch]

    def fits(batch: int) -> bool:
        return probe(batch) <= limit_bytes

    if not fits(1):
        return fit
    if max_batch == 1:
        fit.max_batch_size = 1
        return fit
    other = traced.input_shape[0] if 1 < traced.input_shape[0] <= max_batch else 2
    probe(other)
    guess = min(_where_lines_cross(timelines[1], timelines[other], other, limit_bytes), max_batch)
    fit.max_batch_size = _search(fits, max(guess, 1), max_batch)
    return fit


def _estimate(
    traced: TracedModel, optimizer: OptimizerSpec, device: Device, batch: int, budget: TraceBudget | None
) -> MemoryEstimate:
    """The estimate at ``batch``; torch refusing the model there is ``NotBatchSeparable``."""
    try:
        return estimate_memory(traced, optimizer, device, batch, budget, inference=False)
    except (SpecError, TraceCancelled):
        raise
    except Exception as exc:
        if not _raised_by_torch(exc):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotBatchSeparable(
            ("input_shape",),
            f"the model does not run at batch size {batch} (torch: {reason}): some layer depends on "
            f"dimension 0 of input_shape (batch {traced.input_shape[0]}), so the largest batch "
            "that fits cannot be searched for",
            {"batch_size": batch, "input_batch": traced.input_shape[0]},
        ) from exc


def _where_lines_cross(at_1: list[int], at_b: list[int], b: int, limit: int) -> int:
    """The largest batch at which every line through (1, at_1[i]) and (b, at_b[i]) is within
    ``limit`` (a line that does not grow never bounds it); the two are the same operators when
    they are as many (else the batch changes what runs, and the guess is the line of the peaks)."""
    if len(at_1) != len(at_b):
        at_1, at_b = [max(at_1)], [max(at_b)]
    bounds = [
        1 + (limit - low) * (b - 1) // (high - low)
        for low, high in zip(at_1, at_b, strict=True)
        if high > low
    ]
    return min(bounds, default=1 << 62)


def _search(fits: Callable[[int], bool], guess: int, max_batch: int) -> int:
    """The largest batch in [1, ``max_batch``] that fits (batch 1 does), starting from ``guess``:
    two probes when the guess is right, else a gallop away from it to bracket the boundary and a
    bisection of the bracket."""
    step = 1
    if fits(guess):
        lo, hi = guess, max_batch + 1
        while lo < max_batch:
            candidate = min(lo + step, max_batch)
            if not fits(candidate):
                hi = candidate
                break
            lo, step = candidate, step * 2
    else:
        lo, hi = 1, guess
        while hi > 1:
            candidate = max(hi - step, 1)
            if fits(candidate):
                lo = candidate
                break
            hi, step = candidate, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo

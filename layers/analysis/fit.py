"""The largest batch whose training step fits a device: bisection on the batch dimension.

Every probe is a full training-memory estimate on meta (``layers.analysis.memory``). The peak grows
almost linearly with the batch, so after the first two probes the search jumps to where that
line meets the limit, then bisects the bracket around it: a handful of probes, not twenty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from layers.analysis.budget import TraceBudget
from layers.analysis.memory import Device, MemoryEstimate, estimate_memory
from layers.analysis.trace import TracedModel
from layers.training.optimizers import OptimizerSpec


@dataclass
class Fit:
    max_batch_size: int  # 0 when batch 1 does not fit
    probes: dict[int, int] = field(default_factory=dict)  # batch size -> training peak bytes


def largest_batch(
    traced: TracedModel,
    optimizer: OptimizerSpec,
    device: Device,
    limit_bytes: int,
    max_batch: int,
    budget: TraceBudget | None = None,
) -> Fit:
    """Largest batch (up to ``max_batch``) whose training peak is at most ``limit_bytes``."""
    fit = Fit(0)

    def peak(batch: int) -> int:
        if batch not in fit.probes:
            estimate: MemoryEstimate = estimate_memory(
                traced, optimizer, device, batch, budget, inference=False
            )
            fit.probes[batch] = estimate.memory.training_peak_bytes
        return fit.probes[batch]

    if peak(1) > limit_bytes:
        return fit
    lo, hi = 1, max_batch + 1  # peak(lo) fits; hi is known not to fit (or past the cap)
    if max_batch >= 2:
        slope = peak(2) - peak(1)
        if peak(2) > limit_bytes:
            hi = 2
        else:
            lo = 2
            if slope > 0:  # jump to where the line meets the limit, then bracket it
                guess = min(max_batch, max(lo + 1, 1 + (limit_bytes - peak(1)) // slope))
                for candidate in (guess, guess + 1):
                    if not lo < candidate < hi:
                        continue
                    if peak(candidate) <= limit_bytes:
                        lo = candidate
                    else:
                        hi = candidate
                        break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak(mid) <= limit_bytes:
            lo = mid
        else:
            hi = mid
    fit.max_batch_size = lo
    return fit

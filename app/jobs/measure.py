"""What a job's training really used, to set beside the estimate it was planned with.

On CUDA, ``torch.cuda.max_memory_allocated`` over the run. On the CPU, which keeps no such
count, the parameter, gradient and optimizer-state bytes plus the bytes autograd saved for
backward in the first step, measured with ``saved_tensors_hooks`` on the real tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from app.jobs.domain import JobMemory
from layers.analysis.memory import SavedTensors, optimizer_state_bytes, storage_bytes


class MemoryMeter:
    def __init__(self, model: torch.nn.Module, device: torch.device, estimated_bytes: int | None) -> None:
        self.model, self.device, self.estimated = model, device, estimated_bytes
        self.saved = self.parameters = self.gradients = self.optimizer_state = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    @contextmanager
    def first_forward(self) -> Iterator[None]:
        """Count what autograd saves for backward in the block (each storage once)."""
        with SavedTensors([*self.model.parameters(), *self.model.buffers()]).recording() as saved:
            yield
        self.saved = saved.total

    def after_first_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Call after the first ``optimizer.step()``, before ``zero_grad``."""
        params = list(self.model.parameters())
        self.parameters = storage_bytes(params)
        self.gradients = storage_bytes([p.grad for p in params if p.grad is not None])
        self.optimizer_state = optimizer_state_bytes(optimizer)

    def result(self) -> JobMemory:
        if self.device.type == "cuda":
            measured = torch.cuda.max_memory_allocated(self.device)
            how = "torch.cuda.max_memory_allocated over the whole run (training and validation)"
        else:
            measured = self.parameters + self.gradients + self.optimizer_state + self.saved
            how = (
                "CPU: parameters + gradients + optimizer state + bytes saved for backward in the first "
                "step, measured with saved_tensors_hooks on the real tensors"
            )
        return JobMemory(estimated_bytes=self.estimated, measured_peak_bytes=measured, how=how)

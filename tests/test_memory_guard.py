"""A job is held to its memory allowance (app/jobs/memory_guard.py), and every run records its memory.

Real allocations in this process: the cap makes torch's allocator refuse, the watchdog stops a
thread whose resident memory grows, and both are undone afterwards.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import torch

from app.core.config import settings
from app.examples import DIGITS_MLP, digits_job
from app.jobs.domain import JobMemory, JobStatus, Metrics
from app.jobs.memory_guard import MemoryAllowanceExceeded, MemoryGuard
from app.jobs.plan import plan_job
from app.jobs.store import JobStore
from app.jobs.train import train
from app.schemas.jobs import JobCreate, JobPublic
from layers.language.errors import LimitError

MIB = 1 << 20


def test_an_allocation_past_the_cap_fails_and_the_cap_is_lifted_after() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    guard = MemoryGuard(64 * MIB, "cpu", estimate_bytes=MIB)
    with pytest.raises(RuntimeError) as caught, guard:
        small = torch.ones(8 * MIB, dtype=torch.uint8)  # within the allowance: fine
        torch.ones(256 * MIB, dtype=torch.uint8)
    assert small.sum() == 8 * MIB
    reason = guard.explain(caught.value)
    assert reason and "memory allowance of 64 MiB" in reason and "estimate was 1 MiB" in reason
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert torch.ones(256 * MIB, dtype=torch.uint8).numel() == 256 * MIB  # lifted


def test_the_watchdog_stops_a_thread_whose_resident_memory_grows() -> None:
    # The address-space cap is generous here; the resident-memory watchdog is the one to fire.
    guard = MemoryGuard(2048 * MIB, "cpu", host_allowance_bytes=32 * MIB, poll_s=0.01)
    kept = []
    with pytest.raises(MemoryAllowanceExceeded), guard:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kept.append(torch.ones(4 * MIB, dtype=torch.uint8))  # written to: resident
            time.sleep(0.005)
    assert guard.tripped and "grew by" in guard.tripped
    assert "memory allowance" in guard.explain(MemoryAllowanceExceeded())


def test_other_errors_are_not_blamed_on_memory() -> None:
    guard = MemoryGuard(64 * MIB)
    with guard:
        pass
    assert guard.explain(ValueError("bad")) is None


def test_a_job_that_lies_about_its_size_fails_clearly() -> None:
    # A 4096-wide MLP needs hundreds of MiB; its payload claims 1 MiB and an allowance of 32 MiB.
    mlp = {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 4096},
            {"type": "ReLU"},
            {"type": "Linear", "out_features": 4096},
            {"type": "Linear", "out_features": 10},
        ]
    }
    job = JobCreate.model_validate(digits_job(mlp, epochs=1, device="cpu"))
    job.dataset.load(
        True, settings
    )  # imports scikit-learn now: the job should fail on its tensors, not on that
    plan = plan_job(job)
    assert plan.memory_estimate_bytes > 100 * MIB
    payload = plan.payload.model_copy(
        update={"memory_estimate_bytes": MIB, "memory_allowance_bytes": 32 * MIB}
    )
    events = list(train(payload))
    assert events[-1].kind == "failed", events[-1]
    assert events[-1].error.startswith("out of memory: the job went over its memory allowance of 32 MiB")
    assert torch.ones(256 * MIB, dtype=torch.uint8).numel() == 256 * MIB  # this process carries on


def test_a_finished_job_reports_its_estimate_beside_its_measurement() -> None:
    plan = plan_job(JobCreate.model_validate(digits_job(DIGITS_MLP, epochs=1, device="cpu")))
    done = list(train(plan.payload))[-1]
    assert done.kind == "done", done
    memory = done.memory
    assert memory.estimated_bytes == plan.memory_estimate_bytes
    assert 0 < memory.measured_peak_bytes < plan.memory_estimate_bytes
    assert "saved_tensors_hooks" in memory.how
    assert plan.payload.memory_allowance_bytes > plan.memory_estimate_bytes


def test_the_planner_refuses_past_the_limit_with_the_breakdown(monkeypatch) -> None:
    monkeypatch.setattr(settings, "max_job_memory_bytes", 100_000)
    with pytest.raises(LimitError) as caught:
        plan_job(JobCreate.model_validate(digits_job(DIGITS_MLP, device="cpu")))
    assert caught.value.loc == ("model",)
    for part in ("parameters", "gradients", "optimizer_state", "activations", "temporary", "data"):
        assert part in caught.value.msg, caught.value.msg
    assert set(caught.value.ctx["breakdown"]) >= {"parameters", "activations"}


def test_the_store_keeps_a_finished_jobs_memory(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("a", {"x": 1}, 123)
    memory = JobMemory(estimated_bytes=123, measured_peak_bytes=100, how="test")
    metrics = Metrics(train_loss=1.0, val_loss=1.0, val_accuracy=None)
    assert store.finish("a", JobStatus.SUCCEEDED, metrics=metrics, memory=memory)
    job = store.get("a")
    assert job.memory == memory
    assert JobPublic.of(job).memory.measured_peak_bytes == 100
    store.close()

"""Which registered layer types export to ONNX: each registry-test sample, exported alone as the
service exports it, run in onnxruntime at the traced batch and at another one, against torch.

    .venv/bin/python scripts/onnx_coverage.py   # from the repository root; ~5 s per type on 2 cores
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from test_registry import SAMPLES, real_input  # noqa: E402

from layers import ModelSpec, SpecError  # noqa: E402
from layers.analysis.trace import trace_model  # noqa: E402
from layers.export.onnx_export import ExportLimits, onnx_file  # noqa: E402


def main() -> None:
    failed = 0
    for name, sample in SAMPLES.items():
        traced = trace_model(ModelSpec(layers=[sample.spec]), tuple(sample.input_shape), sample.input_dtype)
        torch.manual_seed(0)
        module = traced.spec.build().eval()
        started = time.monotonic()
        try:
            session = ort.InferenceSession(onnx_file(traced, name, lambda m=module: m, ExportLimits()))
        except SpecError as e:
            failed += 1
            print(f"{name:24} 422 {e.msg[:160]}")
            continue
        errors = []
        for batch in (sample.input_shape[0], 3):
            x = real_input([batch, *sample.input_shape[1:]], sample.input_dtype)
            with torch.no_grad():
                expected = module(x).numpy()
            errors.append(float(np.abs(session.run(None, {"input": x.numpy()})[0] - expected).max()))
        print(f"{name:24} ok  max |onnx - torch| {max(errors):.1e}  ({time.monotonic() - started:.1f} s)")
    print(f"{len(SAMPLES) - failed} of {len(SAMPLES)} layer types export")


if __name__ == "__main__":
    main()

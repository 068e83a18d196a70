"""How long a summary of today's transformers takes on the meta device, with and without Repeat.

A ``Repeat`` is traced once and its other copies are only built (on meta), their shapes and FLOPs
taken from the first. This times ``app.analysis.summarize`` in process (first call, then the
median of ``--warm`` calls) for:

- the Llama-2-7B stack of issue 9 (6,738,415,616 parameters, 2048 token ids), as ``Repeat`` 32
  and as the same 32 blocks pasted one after the other (what a spec had to do before Repeat);
- ViT-B/16, GPT-2 small and TinyLlama-1.1B as ``app/examples.py`` writes them.

Run by hand, not in CI (under a minute):

    .venv/bin/python bench/repeat_summary.py --warm 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.analysis import summarize  # noqa: E402
from app.examples import SUMMARY_EXAMPLES  # noqa: E402
from layers import ModelSpec  # noqa: E402

BLOCK = [
    {
        "type": "Residual",
        "layers": [{"type": "RMSNorm"}, {"type": "CausalSelfAttention", "num_heads": 32, "rope": True}],
    },
    {"type": "Residual", "layers": [{"type": "RMSNorm"}, {"type": "SwiGLU", "hidden_features": 11008}]},
]


def llama_7b(repeat: bool) -> dict:
    blocks = [{"type": "Repeat", "times": 32, "layers": BLOCK}] if repeat else BLOCK * 32
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": 32000, "embedding_dim": 4096},
            *blocks,
            {"type": "RMSNorm"},
            {"type": "Linear", "out_features": 32000, "bias": False},
        ]
    }


def cases() -> dict[str, tuple[dict, list[int], str]]:
    out = {
        "llama-2-7b, Repeat 32": (llama_7b(True), [1, 2048], "int64"),
        "llama-2-7b, 32 pasted blocks": (llama_7b(False), [1, 2048], "int64"),
    }
    for name in ("vit_b_16", "gpt2_small", "tiny_llama"):
        value = SUMMARY_EXAMPLES[name]["value"]
        out[name] = (value["model"], value["input_shape"], value.get("input_dtype", "float32"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5, help="warm calls per model (median reported)")
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    machine = f"{platform.system()} {platform.machine()}, {platform.processor() or 'cpu'}"
    print(f"{machine}, python {platform.python_version()}, torch {torch.__version__}")
    print(f"{'model':32} {'params':>15} {'first s':>8} {'warm s (median)':>16}")
    for name, (model, shape, dtype) in cases().items():
        spec = ModelSpec.model_validate(model)
        start = time.perf_counter()
        summary = summarize(spec, tuple(shape), dtype)
        first = time.perf_counter() - start
        warm = []
        for _ in range(args.warm):
            start = time.perf_counter()
            summarize(spec, tuple(shape), dtype)
            warm.append(time.perf_counter() - start)
        print(f"{name:32} {summary.total_params:>15,} {first:>8.3f} {statistics.median(warm):>16.3f}")


if __name__ == "__main__":
    main()

"""The text-embedding pass: captions/s of ``TextEncoder.encode`` against diffusers' own steps.

``benchmarks/bench_text.py``'s ``measure`` times both sides on the same batches back to back
with the tests' tiny UMT5 (saved and loaded locally, no hub), after checking that their outputs
are ``torch.equal``. With so small a model the fixed costs weigh the most, so the ratio bounds
wan_data's overhead from above; the captions/s say nothing about UMT5-XXL on a GPU.
"""

from __future__ import annotations

import os

from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec
from wan_data.tools.bench.scripts import benchmark_function

__all__ = ["TEXT_SPECS", "run_text"]

TEXT_RATE = MeasureSpec(
    "text.captions_per_s",
    "TextEncoder.encode, batch 8, tiny UMT5 / tokenizer + encoder called as diffusers does",
    "captions/s",
    "diffusers steps",
    0.90,
)
TEXT_SPECS = (TEXT_RATE,)


def run_text(ctx: BenchContext) -> list[Measure]:
    """Captions/s of ``TextEncoder.encode`` against the tokenizer and encoder called as diffusers
    does, with a tiny UMT5 (``text.captions_per_s``); ``SKIP`` without transformers (the
    ``text`` extra)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("transformers") is None:
        return [Measure.missing(TEXT_RATE, "SKIP", "transformers not installed (the text extra)")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    save = benchmark_function("bench_text", "save_tiny_text_encoder")
    captions_of = benchmark_function("bench_text", "generate_captions")
    measure = benchmark_function("bench_text", "measure")
    captions = captions_of(16 if ctx.quick else 256)
    folder = save(ctx.workdir / "umt5")
    row = measure(folder, captions, 8, ctx.repeats, torch.float32)
    return [
        Measure.of(
            TEXT_RATE,
            row["ours_captions_per_s"],
            row["baseline_captions_per_s"],
            ratio=row["ratio"],
            note="" if row["equal_outputs"] else "outputs differ",
            details={"captions": len(captions), "equal_outputs": row["equal_outputs"]},
        )
    ]

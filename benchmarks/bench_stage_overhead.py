"""What reading a batch member through the stages costs, against decoding it, in one run.

Training reads every batch member through the decode stage and the dataset's clip stages
(``compose([sample], [Decode(options), *clip_stages], context)``): a chain of generators, the
error policy, counters and the breaker per member. This measures that machinery alone (a
``ReadStage`` whose read returns at once, plus ``n`` pass-through ``Map`` clip stages) against
``decode_sample`` of a real generated clip (832x480 H.264 noise, 33 frames at 16 fps into
416x240), so the ratio says how much of a member's time the stages take.

Measured:
    stages_us           median per-member time of the stage chain without decoding
    decode_ms           median time of decoding the same member's clip
    overhead_fraction   stages / decode

Usage:
    .venv/bin/python benchmarks/bench_stage_overhead.py [--clip-stages 2] [--json PATH]
Writes JSON to benchmarks/results/stage_overhead.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_data.failures.mechanism import StageContext
from wan_data.items import Clip, PlanSample, Probed, Source
from wan_data.planning.batches import ReadStage
from wan_data.stages import Bucket, Map, Probe, ProbeLimits, Stage, compose
from wan_data.stages.decode import DecodeOptions, decode_sample
from wan_data.tools.synthetic import make_synthetic_dataset


def _same(clip: Clip) -> Clip:
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-stages", type=int, default=2)
    parser.add_argument("--members", type=int, default=20000)
    parser.add_argument("--decodes", type=int, default=9)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "stage_overhead.json",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_synthetic_dataset(folder, num_videos=1, seconds=3.0, broken=False, sizes=((832, 480),))
        path = next(Path(folder).rglob("*.mp4"))
        source = Source(key="clip", path=str(path), media_type="video")
        options = DecodeOptions(frames=(33,), fps=16.0, buckets=((416, 240),))
        (probed,) = Probe(ProbeLimits(min_frames=33, fps=16.0))([source])
        assert isinstance(probed, Probed)
        (sample,) = Bucket(options)([probed])
        assert isinstance(sample, PlanSample)
        clip = decode_sample(probed, 0, sample.bucket, options, 0)

        decode_s = []
        for _ in range(args.decodes):
            started = time.perf_counter()
            decode_sample(probed, 0, sample.bucket, options, 0)
            decode_s.append(time.perf_counter() - started)

        context = StageContext()
        stages: list[Stage[Any, Any]] = [ReadStage("decode", lambda s, e: clip)]
        stages += [Map(_same, name=f"clip_stage_{i}") for i in range(args.clip_stages)]
        per_member = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(args.members // 5):
                (_out,) = compose([sample], stages, context)
            per_member.append((time.perf_counter() - started) / (args.members // 5))
    stages_s = statistics.median(per_member)
    decode_median = statistics.median(decode_s)
    result = {
        "benchmark": "stage_overhead",
        "machine": platform.platform(),
        "clip_stages": args.clip_stages,
        "stages_us": round(stages_s * 1e6, 2),
        "decode_ms": round(decode_median * 1e3, 2),
        "overhead_fraction": round(stages_s / decode_median, 6),
    }
    print(
        f"stages per member: {result['stages_us']} us ({args.clip_stages} clip stage(s)); "
        f"decoding the member: {result['decode_ms']} ms; "
        f"stages / decode = {result['overhead_fraction']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Cost of the opt-in integrity check (``check_integrity``), as ratios measured in the same run.

Baselines, on the same files with the same number of decoder threads:
    plain_ffmpeg    ``ffmpeg -v error -i FILE -map 0:v:0 -f null -`` without ``-xerror`` or
                    ``-err_detect``: the least work that decodes every frame
    torchcodec      ``VideoDecoder(FILE).get_frames_in_range`` over the whole file, in chunks of
                    32 frames: what decoding the full file for training costs

Measured (median of --repeats, per file and summed over all files):
    ms_per_source_second    check wall time / file duration
    check_vs_plain_ffmpeg   check time / plain_ffmpeg time (the price of error detection)
    check_vs_torchcodec     check time / torchcodec time
    ffmpeg_startup_ms       ``ffmpeg -version`` wall time: the fixed cost every check pays, which
                            dominates on clips of a second or two
    early_exit              check time of the first file damaged mid first keyframe / clean

With ``--detection N`` it also damages small one-keyframe clips of each available codec N times
(one random byte XORed with a random non-zero value, inside the key packet or inside any video
packet) and reports how many damaged files the check flags, out of those whose decoded frames
actually changed (framemd5 differs from the clean file; flips in SEI text or padding change
nothing and are not damage).

It prints ratios and never asserts timings: they depend on the machine.

Usage:
    .venv/bin/python benchmarks/bench_integrity.py                     # generated 832x480 H.264
    .venv/bin/python benchmarks/bench_integrity.py --videos DIR        # your own files
    .venv/bin/python benchmarks/bench_integrity.py --detection 30      # plus detection rates
Writes JSON to benchmarks/results/integrity.json (or --json). Real files in ../shared/media are
added when that folder exists (--no-shared to leave them out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_data.media.integrity import DEFAULT_ERR_DETECT, check_integrity, find_ffmpeg

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
SOURCES = ("testsrc2", "testsrc2,noise=alls=30:allf=t+u", "mandelbrot")
# (encoder, suffix, extra output options) for the detection experiment
CODECS = (
    ("libx264", ".mp4", ["-preset", "veryfast"]),
    ("mpeg4", ".mp4", ["-q:v", "5"]),
    ("libvpx-vp9", ".webm", ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"]),
    ("libx265", ".mp4", ["-x265-params", "log-level=error"]),
    ("libx265", ".mp4", ["-x265-params", "log-level=error:hash=1:rskip=0"]),
)


def tool(*command: str, check: bool = True) -> str:
    """stdout of ``command`` (an argument list, no shell)."""
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check
    ).stdout


def ffmpeg(*args: str) -> str:
    return tool("ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args)


def has_encoder(name: str) -> bool:
    return f" {name} " in ffmpeg("-encoders")


def generate(folder: Path, count: int, size: str, seconds: float, fps: float) -> list[Path]:
    """H.264 clips with x264 defaults (preset medium, crf 23, keyint 250) of varied content."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"clip_{i}.mp4"
        source, _, post = SOURCES[i % len(SOURCES)].partition(",")
        graph = f"{source}=size={size}:rate={fps}" + (f",{post}" if post else "")
        ffmpeg("-f", "lavfi", "-i", graph, "-t", str(seconds), "-c:v", "libx264", str(path))
        out.append(path)
    return out


def probe(path: Path) -> tuple[float, int, int]:
    """(duration in seconds, absolute index of the first video stream, its frame count)."""
    entries = "stream=index,nb_read_packets,duration:format=duration"
    out = tool(
        *("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets"),
        *("-show_entries", entries, "-of", "json", str(path)),
    )
    info = json.loads(out)
    stream = info["streams"][0]
    duration = float(stream.get("duration", info["format"]["duration"]))  # mkv: no stream value
    return duration, int(stream["index"]), int(stream["nb_read_packets"])


def plain_ffmpeg(path: Path, threads: int) -> None:
    tool(
        *("ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "error"),
        *("-threads", str(threads), "-i", str(path), "-map", "0:v:0", "-f", "null", "-"),
    )


def torchcodec_full(path: Path, threads: int, stream: int, frames: int) -> None:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), stream_index=stream, num_ffmpeg_threads=threads)
    for start in range(0, frames, 32):
        decoder.get_frames_in_range(start, min(frames, start + 32))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def timing(files: list[Path], threads: int, repeats: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for path in files:
        duration, stream, frames = probe(path)
        # warm-up, not measured: page cache, ffmpeg's shared libraries, torch import
        verdict = check_integrity(str(path), threads=threads)
        plain_ffmpeg(path, threads)
        torchcodec_full(path, threads, stream, frames)
        check = median_seconds(partial(check_integrity, str(path), threads=threads), repeats)
        plain = median_seconds(partial(plain_ffmpeg, path, threads), repeats)
        tc = median_seconds(partial(torchcodec_full, path, threads, stream, frames), repeats)
        rows.append(
            {
                "file": path.name,
                "ok": verdict.ok,
                "source_seconds": round(duration, 3),
                "frames": frames,
                "check_s": round(check, 4),
                "plain_ffmpeg_s": round(plain, 4),
                "torchcodec_s": round(tc, 4),
                "ms_per_source_second": round(1000 * check / duration, 2),
                "check_vs_plain_ffmpeg": round(check / plain, 3),
                "check_vs_torchcodec": round(check / tc, 3),
            }
        )
        print(json.dumps(rows[-1]))
    total = {k: sum(r[k] for r in rows) for k in ("source_seconds", "check_s")}
    plain_total = sum(r["plain_ffmpeg_s"] for r in rows)
    tc_total = sum(r["torchcodec_s"] for r in rows)
    summary: dict[str, float] = {
        "ms_per_source_second": round(1000 * total["check_s"] / total["source_seconds"], 2),
        "check_vs_plain_ffmpeg": round(total["check_s"] / plain_total, 3),
        "check_vs_torchcodec": round(total["check_s"] / tc_total, 3),
    }
    startup = median_seconds(partial(tool, "ffmpeg", "-hide_banner", "-version"), repeats)
    summary["ffmpeg_startup_ms"] = round(1000 * startup, 1)  # fixed cost of every check
    return {"files": rows, "summary": summary}


def early_exit(path: Path, folder: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Check time of ``path`` with 4 bytes XORed mid first key packet, against the clean file:
    ``-xerror`` should end the run at the first damaged frame."""
    pos, size, _ = next(p for p in packets(path) if p[2])
    data = bytearray(path.read_bytes())
    for off in range(pos + size // 2, pos + size // 2 + 4):
        data[off] ^= 0xFF
    damaged = folder / f"damaged_{path.name}"
    damaged.write_bytes(bytes(data))
    verdict = check_integrity(str(damaged), threads=threads)
    bad = median_seconds(partial(check_integrity, str(damaged), threads=threads), repeats)
    good = median_seconds(partial(check_integrity, str(path), threads=threads), repeats)
    return {
        "file": path.name,
        "detected": not verdict.ok,
        "first_error": verdict.errors[:1],
        "damaged_check_s": round(bad, 4),
        "clean_check_s": round(good, 4),
        "damaged_vs_clean": round(bad / good, 3),
    }


def framemd5(path: Path) -> list[str]:
    out = tool(
        *("ffmpeg", "-nostdin", "-v", "quiet", "-threads", "1", "-i", str(path)),
        *("-map", "0:v:0", "-f", "framemd5", "-"),
        check=False,
    )
    return [line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if line[:1] != "#"]


def packets(path: Path) -> list[tuple[int, int, bool]]:
    out = tool(
        *("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries"),
        *("packet=pos,size,flags", "-of", "compact=p=0", str(path)),
    )
    rows = [dict(kv.split("=", 1) for kv in line.split("|")) for line in out.splitlines()]
    return [(int(r["pos"]), int(r["size"]), "K" in r["flags"]) for r in rows if r["pos"] != "N/A"]


def detection(folder: Path, trials: int, size: str) -> dict[str, Any]:
    """Detection rate of single-byte damage per codec, in key packets and in any packet."""
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for encoder, suffix, extra in CODECS:
        if not has_encoder(encoder):
            continue
        name = encoder + ("_hash" if "hash=1" in " ".join(extra) else "")
        clean = folder / f"clean_{name}{suffix}"
        graph = f"testsrc2=size={size}:rate=24"
        args = ["-f", "lavfi", "-i", graph, "-frames:v", "48", "-c:v", encoder, "-g", "1000"]
        ffmpeg(*args, "-pix_fmt", "yuv420p", "-threads", "1", *extra, str(clean))
        reference, data, pk = framemd5(clean), clean.read_bytes(), packets(clean)
        clean_ok = check_integrity(str(clean)).ok
        results[name] = {"clean_ok": clean_ok}
        for where in ("key", "any"):
            pool = [p for p in pk if p[2]] if where == "key" else pk
            changed = detected = detected_changed = 0
            for seed in range(trials):
                rng = random.Random(seed)
                pos, length, _ = rng.choice(pool)
                damaged = bytearray(data)
                damaged[pos + rng.randrange(length)] ^= rng.randrange(1, 256)
                target = folder / f"damaged{suffix}"
                target.write_bytes(bytes(damaged))
                hit = not check_integrity(str(target)).ok
                moved = framemd5(target) != reference
                changed += moved
                detected += hit
                detected_changed += hit and moved
            results[name][where] = {
                "trials": trials,
                "frames_changed": changed,
                "detected": detected,
                "detected_of_changed": detected_changed,
                "rate_of_changed": round(detected_changed / changed, 3) if changed else None,
            }
        print(name, json.dumps(results[name]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="time these files instead of generated ones")
    parser.add_argument("--count", type=int, default=3, help="generated clips")
    parser.add_argument("--size", default="832x480", help="generated clip size WxH")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--threads", type=int, default=1, help="decoder threads on every side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-shared", action="store_true", help="leave out ../shared/media")
    parser.add_argument("--detection", type=int, default=0, help="damage trials per codec/place")
    parser.add_argument("--detection-size", default="320x240")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "integrity.json"
    )
    args = parser.parse_args()
    find_ffmpeg()
    with tempfile.TemporaryDirectory(prefix="wan_bench_integrity_") as tmp:
        if args.videos is not None:
            files = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            t0 = time.perf_counter()
            files = generate(Path(tmp) / "clips", args.count, args.size, args.seconds, args.fps)
            print(f"generated {len(files)} clips {args.size} in {time.perf_counter() - t0:.1f} s")
        if SHARED.is_dir() and not args.no_shared:
            files += sorted(p for p in SHARED.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        result: dict[str, Any] = {
            "benchmark": "integrity",
            "options": {
                "threads": args.threads,
                "repeats": args.repeats,
                "err_detect": DEFAULT_ERR_DETECT,
                "generated": None if args.videos else f"{args.count}x {args.size} {args.seconds}s",
            },
            "timing": timing(files, args.threads, args.repeats),
        }
        result["early_exit"] = early_exit(files[0], Path(tmp), args.threads, args.repeats)
        print("early exit", json.dumps(result["early_exit"]))
        if args.detection:
            result["detection"] = detection(Path(tmp) / "det", args.detection, args.detection_size)
    version = tool("ffmpeg", "-version")
    result["machine"] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ffmpeg": version.split("\n", 1)[0],
        "ffmpeg_path": shutil.which("ffmpeg"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["timing"]["summary"], indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

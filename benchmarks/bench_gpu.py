"""The GPU encode path: prepare pass vs bare ``vae.encode``, fp32 vs bf16, peak VRAM, GPU decode.

Runs on CUDA with a full-size Wan 2.1 VAE (``AutoencoderKLWan()``: diffusers' default config
is Wan 2.1's, base_dim 96, z_dim 16, dim_mult 1,2,4,4; weights randomly initialised and seeded,
so nothing is downloaded and the compute is that of the released model), or anywhere with
``--tiny`` (the tests' tiny Wan 2.1 VAE at small sizes: the code paths, not the speed).

Measured, every figure against a baseline in the same run:
    prepare_vs_bare_encode  ``ds.prepare()`` clips/s (decode in workers, host->device copies,
                            encode, cache writes) / bare ``vae.encode(x).latent_dist.mode()``
                            of the same clips decoded beforehand and already on the device
                            (target >= 0.90: decoding and copies hidden behind the encode)
    bf16_vs_fp32            bare encode clips/s with the VAE in bf16 / in fp32, and how far
                            the bf16 latents are from the fp32 ones (max abs, relative L2)
    peak_vram               peak allocated device memory of one clip's encode, untiled and
                            tiled (diffusers' 256 px tiles), fp32 and bf16, at 81x480x832 and
                            81x720x1280 (where tiling starts to be needed); CPU: no figure
    gpu_decode (--gpu-decode) torchcodec ``VideoDecoder(device="cuda")`` clips/s / the CPU
                            decoder's, same clips and timestamps

Usage:
    .venv/bin/python benchmarks/bench_gpu.py --tiny                 # CPU, seconds
    python benchmarks/bench_gpu.py --gpu-decode                     # CUDA, full-size VAE
    benchmarks/run_gpu_check.sh                                     # the whole GPU check
Writes JSON to benchmarks/results/gpu.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from wan_data.tools.bench.machine import machine_info
from wan_data.tools.synthetic import build_tiny_wan_vae, make_synthetic_dataset

FULL = {"clips": 8, "frames": 81, "size": (832, 480), "fps": 16.0}
TINY = {"clips": 4, "frames": 9, "size": (96, 64), "fps": 8.0}
FULL_PEAK_SIZES = ((81, 480, 832), (81, 720, 1280))
TINY_PEAK_SIZES = ((5, 64, 64), (5, 64, 288))  # 288 > 256: tiling splits it
SEED = 0


def build_vae(tiny: bool) -> Any:
    """The tiny test VAE, or a full-size Wan 2.1 ``AutoencoderKLWan`` with seeded random weights."""
    if tiny:
        return build_tiny_wan_vae("wan2.1", seed=SEED)
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return AutoencoderKLWan()  # diffusers' defaults are the Wan 2.1 VAE's config


def torchcodec_missing() -> str | None:
    """Why torchcodec cannot decode here (not installed, no FFmpeg libraries), or None."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libraries)
    except Exception as exc:
        return f"torchcodec unusable: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_encode(model: Any, clips: list[torch.Tensor], device: torch.device) -> tuple[float, list]:
    """clips/s of ``vae.encode(x).latent_dist.mode()`` on clips already on the device."""
    outs = []
    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        for x in clips:
            outs.append(model.encode(x).latent_dist.mode())
            model.clear_cache()
    sync(device)
    seconds = time.perf_counter() - started
    return len(clips) / seconds, outs


def predecode(root: Path, common: dict[str, Any]) -> list[torch.Tensor]:
    """The clips the prepare pass will encode, decoded by the pixel pipeline beforehand."""
    from wan_data import WanVideoDataset

    ds = WanVideoDataset(root, **common)
    clips = []
    for batch in ds.loader(num_workers=0):
        clips += [p.unsqueeze(0) for p in batch["pixels"]]
    return clips


def measure_prepare(args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    """Prepare pass and bare encode, fp32 and bf16, on the same synthetic clips."""
    from wan_data import WanVideoDataset
    from wan_data.latents.encoder import VaeEncoder

    sizes = TINY if args.tiny else FULL
    clips_n = args.clips or sizes["clips"]
    w, h = sizes["size"]
    frames, fps = sizes["frames"], sizes["fps"]
    root = work / "videos"
    common = {"frames": [frames], "fps": fps, "resolution": (w, h), "batch_size": 1, "seed": 0}
    missing = torchcodec_missing()
    if missing is None:
        t0 = time.perf_counter()
        make_synthetic_dataset(
            root,
            num_videos=clips_n,
            seconds=frames / fps + 0.5,
            broken=False,
            sizes=((w, h),),
            fps_choices=(24.0,),
        )
        print(f"generated {clips_n} videos {w}x{h} in {time.perf_counter() - t0:.1f} s")
        pixels = predecode(root, common)
    else:
        # No decoder here (torchcodec or its FFmpeg libraries absent): the VAE measures still
        # run, on seeded random clips; the prepare pass, which decodes, cannot.
        print(f"no prepare pass: {missing}")
        gen = torch.Generator().manual_seed(SEED)
        pixels = [torch.rand(1, 3, frames, h, w, generator=gen) * 2 - 1 for _ in range(clips_n)]
    encoder = VaeEncoder(work / "vae", device=device, vae_dtype=torch.float32)
    model = encoder.model  # loaded here, not inside the timed pass
    on_device = [p.to(device) for p in pixels]
    bare_encode(model, on_device[:1], device)  # warm-up: kernels, cudnn autotune
    bare_runs = [bare_encode(model, on_device, device)[0]]
    summary: dict[str, Any] = {"skipped": missing}
    prepare_rate = None
    if missing is None:
        ds = WanVideoDataset(root, **common, vae=str(work / "vae"), cache_dir=str(work / "cache"))
        ds._encoder = encoder  # loaded and warmed above: the pass times decode + encode + writes
        summary = ds.prepare(num_workers=args.workers, progress=False)
        prepare_rate = summary["encoded"] / summary["seconds"] if summary["seconds"] else 0.0
    fp32_rate, fp32_latents = bare_encode(model, on_device, device)
    bare_runs.append(fp32_rate)
    bare = statistics.median(bare_runs)

    # bf16 as a user gets it: loaded in that dtype (diffusers keeps what must stay fp32)
    bf16_model = VaeEncoder(work / "vae", device=device, vae_dtype=torch.bfloat16).model
    on_device_bf16 = [x.to(torch.bfloat16) for x in on_device]
    bare_encode(bf16_model, on_device_bf16[:1], device)
    bf16_rate, bf16_latents = bare_encode(bf16_model, on_device_bf16, device)
    pairs = [(a.float(), b.float()) for a, b in zip(fp32_latents, bf16_latents, strict=True)]
    diffs = [(a - b).abs().max().item() for a, b in pairs]
    rel = [((a - b).norm() / a.norm().clamp_min(1e-12)).item() for a, b in pairs]
    del bf16_model, on_device_bf16, bf16_latents
    return {
        "clips": len(pixels),
        "clip_shape": list(pixels[0].shape[1:]),
        "workers": args.workers,
        "prepare_clips_per_s": prepare_rate,
        "prepare_summary": summary,
        "bare_encode_clips_per_s_runs": bare_runs,
        "bare_encode_clips_per_s": bare,
        "prepare_vs_bare_encode": prepare_rate / bare if bare and prepare_rate else None,
        "target_prepare_vs_bare_encode": 0.90,
        "bf16_clips_per_s": bf16_rate,
        "bf16_vs_fp32": bf16_rate / fp32_rate if fp32_rate else None,
        "bf16_latent_max_abs_diff": max(diffs),
        "bf16_latent_relative_l2": max(rel),
    }


def measure_peak(args: argparse.Namespace, model: Any, device: torch.device) -> list[dict]:
    """Peak device memory of one clip's encode per size, dtype and tiling."""
    rows = []
    sizes = TINY_PEAK_SIZES if args.tiny else FULL_PEAK_SIZES
    for dtype in (torch.float32, torch.bfloat16):
        m = model.to(dtype)
        for frames, height, width in sizes:
            for tiled in (False, True):
                m.enable_tiling() if tiled else m.disable_tiling()
                row: dict[str, Any] = {
                    "frames": frames,
                    "height": height,
                    "width": width,
                    "dtype": str(dtype).removeprefix("torch."),
                    "tiled": tiled,
                }
                gen = torch.Generator().manual_seed(SEED)
                x = (torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1).to(
                    device, dtype
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                sync(device)
                started = time.perf_counter()
                try:
                    with torch.no_grad():
                        m.encode(x).latent_dist.mode()
                    sync(device)
                    row["seconds"] = time.perf_counter() - started
                    row["out_of_memory"] = False
                except torch.cuda.OutOfMemoryError:
                    row["out_of_memory"] = True
                finally:
                    m.clear_cache()
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) - base
                    row["peak_gib"] = round(peak / 2**30, 3)
                else:
                    row["peak_gib"] = None  # no device allocator to read on the CPU
                del x
                rows.append(row)
                print(json.dumps(row))
    model.disable_tiling()
    model.to(torch.float32)
    return rows


def measure_gpu_decode(root: Path, frames: int, fps: float) -> dict[str, Any]:
    """torchcodec on the GPU (NVDEC) against the CPU decoder, same files and timestamps."""
    from torchcodec.decoders import VideoDecoder

    files = sorted(root.rglob("*.mp4"))
    times = [i / fps for i in range(frames)]

    def run(device: str) -> float:
        started = time.perf_counter()
        for path in files:
            out = VideoDecoder(str(path), device=device).get_frames_played_at(times).data
        if device == "cuda":
            torch.cuda.synchronize()
        del out
        return len(files) / (time.perf_counter() - started)

    run("cuda")  # warm-up: the NVDEC context
    cpu, cuda = run("cpu"), run("cuda")
    return {"cpu_clips_per_s": cpu, "cuda_clips_per_s": cuda, "cuda_vs_cpu": cuda / cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny VAE at small sizes (CPU ok)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--clips", type=int, default=None, help="clips for the encode rates")
    parser.add_argument("--workers", type=int, default=4, help="decoding workers of prepare()")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak VRAM sizes")
    parser.add_argument("--gpu-decode", action="store_true", help="also time torchcodec on cuda")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if device.type == "cpu" and not args.tiny:
        print("note: the full-size VAE on a CPU takes minutes per clip; --tiny is the CPU check")
    result: dict[str, Any] = {
        "benchmark": "gpu",
        "vae": "tiny Wan 2.1 (tests)" if args.tiny else "AutoencoderKLWan() = Wan 2.1, random",
        "device": str(device),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wan_bench_gpu_") as tmp:
        work = Path(tmp)
        model = build_vae(args.tiny)
        model.save_pretrained(work / "vae")
        result["vae_parameters"] = sum(p.numel() for p in model.parameters())
        result["encode"] = measure_prepare(args, work, device)
        print(json.dumps({k: v for k, v in result["encode"].items() if k != "prepare_summary"}))
        if not args.no_peak:
            result["peak_vram"] = measure_peak(args, model.to(device).eval(), device)
        if args.gpu_decode:
            if torchcodec_missing() is not None:
                result["gpu_decode"] = {"skipped": torchcodec_missing()}
            elif device.type != "cuda":
                result["gpu_decode"] = {"skipped": "needs a CUDA device"}
            else:
                sizes = TINY if args.tiny else FULL
                try:
                    result["gpu_decode"] = measure_gpu_decode(
                        work / "videos", sizes["frames"], sizes["fps"]
                    )
                except Exception as exc:  # torchcodec built without CUDA, no NVDEC, ...
                    result["gpu_decode"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(result["gpu_decode"]))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_info()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

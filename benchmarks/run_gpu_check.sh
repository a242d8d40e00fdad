#!/usr/bin/env bash
# The whole GPU measurement (issue 14, item 3) in one run: about 8 minutes on an H200.
#
#   benchmarks/run_gpu_check.sh            # writes $OUT/gpu.json and $OUT/gpu_check.log
#
# 1. a smoke run with the tiny VAE on the GPU (seconds: proves the code paths before the long
#    run spends the time), 2. the full-size randomly initialised Wan 2.1 VAE: prepare pass vs
#    bare encode (8 clips of 81x480x832), fp32 vs bf16, peak VRAM at 81x480x832 and
#    81x720x1280 untiled and tiled, torchcodec decoding on the GPU. Each step has its own time
#    limit, so a hang in one still leaves the JSON of the others.
#
# The device image has torch but neither diffusers nor torchcodec: carry their wheels in .whl/
# (git-ignored) and they are installed into a private folder first, e.g. here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers "torchcodec==<the release for the
#       device's torch>"
# Without torchcodec (or without the FFmpeg libraries it loads) the VAE measures still run on
# random clips, and the JSON says why the prepare pass and GPU decoding are missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
exec > >(tee "$OUT/gpu_check.log") 2>&1

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/wan_wheels .whl/*.whl \
        && export PYTHONPATH="/tmp/wan_wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" - <<'PYEOF'
import importlib
for name in ("torch", "diffusers", "torchcodec", "safetensors", "xxhash", "psutil", "tqdm"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"{name} MISSING: {type(exc).__name__}: {exc}")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda)
PYEOF

status=0
echo "== 1. smoke: tiny VAE on the GPU"
timeout 120 "$PY" benchmarks/bench_gpu.py --tiny --device cuda --gpu-decode \
    --json "$OUT/gpu_tiny.json" || status=$?
echo "== 2. full-size Wan 2.1 VAE (random weights)"
timeout 390 "$PY" benchmarks/bench_gpu.py --device cuda --gpu-decode --workers 8 \
    --json "$OUT/gpu.json" || status=$?
echo "exit status $status; JSON in $OUT"
exit "$status"

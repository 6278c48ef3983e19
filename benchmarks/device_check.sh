#!/usr/bin/env bash
# The GPU checks of issue #6 as one prepared script, for a lent GPU machine (bare, offline, its own torch).
#
#   benchmarks/device_check.sh --prepare    # here, with network: wheels the GPU image lacks and a copy of the
#                                           # shared fixtures, into .device/ (git-ignored; about 17 MB)
#   benchmarks/device_check.sh              # there, from the repository root, with .device carried along
#
# The checks run most informative first, each under its own time limit, and each writes its own file to $OUT
# (./device_results when $OUT is unset), so a run cut short still returns what it finished:
#   1. env.txt      the GPU (nvidia-smi.txt), torch and the packages the library imports
#   2. fixture.txt  the shared lowlight_short fixture replayed on the GPU: compat mode (float32, with cuDNN's default
#                   TF32 convolutions and without) and the fast path (one UNet call, fp16 autocast), each against the
#                   fixture's tolerance
#   3. speed_fp16.txt     speed.py (b) + (c): SD-2.1-base architecture, random weights, fp16 autocast, one image, the
#                         full low-light schedule, next to the per-kernel floor
#   4. speed_compile.txt  the same with torch.compile and channels-last, two images per call, a shorter schedule
#   5. speed_bf16.txt     bf16 weights without autocast, a shorter schedule
#   6. memory.txt         memory.py: peak memory of the fast path and of half weights, with and without the VAE
#                         decoder's gradient checkpointing (the tensor count and the CUDA allocator's own peak)
# The limits add up to 585 s: give the device call timeout_s 600.
# Environment: DEVICE (cuda), RES (512), STEPS (450: the full schedule), SHORT (100: rows 4-5), PYTHON (python3).
# A CPU smoke test of the script itself: DEVICE=cpu RES=64 STEPS=2 SHORT=2 PYTHON=.venv/bin/python benchmarks/device_check.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CARRY=.device
DIFFUSERS=diffusers==0.42.1
EXTRA_WHEELS="importlib_metadata==8.7.0"

if [ "${1:-}" = "--prepare" ]; then
  shared=${SHARED:-../shared}
  [ -d "$shared/fidelity" ] || { echo "device_check: no $shared/fidelity to copy (set SHARED)"; exit 1; }
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
  cp -r "$shared/fidelity" "$CARRY/fidelity"
  $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$CARRY/wheels" $DIFFUSERS $EXTRA_WHEELS || exit 1
  du -sh "$CARRY"; ls "$CARRY/wheels"
  exit 0
fi

OUT=${OUT:-device_results}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda} RES=${RES:-512} STEPS=${STEPS:-450} SHORT=${SHORT:-100}
if ls "$CARRY"/wheels/*.whl > /dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ldrps-site \
    "$CARRY"/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/ldrps-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
CASE=$CARRY/fidelity/cases/lowlight_short
[ -d "$CASE" ] || CASE=../shared/fidelity/cases/lowlight_short

step() {  # step NAME SECONDS COMMAND...: run under a time limit, output to $OUT/NAME.txt and to the console
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.txt"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step env 30 $PYTHON - <<'PY'
import torch, diffusers, transformers, ldrps_nb
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("diffusers", diffusers.__version__, "transformers", transformers.__version__, "ldrps_nb", ldrps_nb.__version__)
if torch.cuda.is_available(): print(torch.cuda.get_device_name(), torch.cuda.get_device_capability())
PY

step fixture 85 $PYTHON - "$CASE" "$DEVICE" <<'PY'
import sys, time, torch
from pathlib import Path
from ldrps_nb.backbone import load_backbone
from ldrps_nb.reference import compare, load_case, replay
case, device = Path(sys.argv[1]), sys.argv[2]
backbone = load_backbone(str(case / load_case(case)["files"]["pipeline"]), device=device, dtype=torch.float32)
runs = [("compat, float32", {}, None), ("fast path, fp16 autocast", {"unet_batch": "joint", "autocast": "fp16"}, None)]
if device.startswith("cuda"):  # cuDNN convolutions run in TF32 by default on Ampere and later: does compat need it off?
    runs.append(("compat, float32, TF32 convolutions off", {}, False))
for name, overrides, tf32 in runs:
    if tf32 is not None: torch.backends.cudnn.allow_tf32 = tf32
    t0 = time.perf_counter()
    rep = replay(case, backbone=backbone, return_records=True, **overrides)
    report = compare(case, rep)
    print(f"{name} on {device}: {'within' if report['ok'] else 'OUTSIDE'} the fixture tolerance "
          f"({time.perf_counter() - t0:.1f} s)")
    checks = report["checks"]
    print(f"  {sum(c['ok'] for c in checks)} of {len(checks)} checks within their bounds; per pass, and any outside:")
    for c in checks:
        if "step" not in c["where"] or not c["ok"]:
            print(f"  {'ok ' if c['ok'] else 'BAD'} {c['check']} {c['where']}: {c['value']:.4g} (bound {c['bound']:.4g})")
PY

SPEED="$PYTHON benchmarks/speed.py --sd --device $DEVICE --resolution $RES --no-pocket --case none"
step speed_fp16 230 $SPEED --steps "$STEPS" --images 1
step speed_compile 125 $SPEED --steps "$SHORT" --images 2 --compile --channels-last
step speed_bf16 70 $SPEED --steps "$SHORT" --images 1 --dtype bfloat16 --autocast off
step memory 45 $PYTHON benchmarks/memory.py --device "$DEVICE" --resolution "$RES" \
  --rows "fast,fast + VAE checkpointing,half weights,half weights + VAE checkpointing"
ls -la "$OUT"

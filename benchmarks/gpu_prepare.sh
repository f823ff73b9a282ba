#!/usr/bin/env bash
# Prepare, on a machine with this project's venv (TensorFlow), a GPU benchmark run on a lent GPU host
# that has no network and no TensorFlow (see RESULTS.md, "GPU"):
#   .ort/   segment-class ONNX exports of a briefly trained FrameLevelLogistic and DBoF (plus DBoF with a
#           static 5-frame axis), made from our own synthetic data
#   .whl/   the wheels the host lacks (onnxruntime-gpu, crc32c, click) for its Python, the large one split
#           into parts small enough to carry one per device call
# Then on the device, one call per carried file of .ort/ and .whl/ (under 64 MiB a call; the list is
# written to .whl/PLAN): bash benchmarks/gpu_run.sh stash, and last bash benchmarks/gpu_run.sh bench.
# Usage: bash benchmarks/gpu_prepare.sh [python version of the GPU host, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
PY=${PY:-.venv/bin/python}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
PART_BYTES=${PART_BYTES:-52000000}

rm -rf .ort .whl
mkdir -p .ort .whl/small
"$PY" - <<'PYEOF'
import os, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from yt8m_engine.export.onnx_export import export
from yt8m_engine.io.synth import synth
from yt8m_engine.train.config import ModelConfig, TrainConfig
from yt8m_engine.train.trainer import train

tmp = tempfile.mkdtemp(prefix="gpu_prepare_")
synth(tmp, videos=32, shards=2, seed=0)
for model in ("FrameLevelLogisticModel", "DbofModel"):  # default sizes; 2 steps: speed, not accuracy
    train(ModelConfig(model=model), TrainConfig(train_data_pattern=os.path.join(tmp, "2/frame/train*"),
                                                train_dir=os.path.join(tmp, model), batch_size=8, max_steps=2),
          echo=lambda s: None)
# DBoF in fp16 (46 MB: a device call carries at most 64 MiB), with a dynamic and a static 5-frame axis
for name, model, extra in (("flm", "FrameLevelLogisticModel", {}), ("dbof16", "DbofModel", {"fp16": True}),
                           ("dbof16f5", "DbofModel", {"fp16": True, "frames": 5})):
    print(export(os.path.join(tmp, model), os.path.join(".ort", f"{name}.onnx"), classes="segment", **extra))
PYEOF

pip_dl() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$1" "$2"
}
pip_dl .whl "$ORT_GPU"
pip_dl .whl/small crc32c
pip_dl .whl/small click
wheel=$(ls .whl/onnxruntime_gpu-*.whl)
split -b "$PART_BYTES" -d "$wheel" ".whl/part."
echo "$(basename "$wheel")" > .whl/small/ORT_WHEEL_NAME
rm "$wheel"
"$PY" - <<'PYEOF' > .whl/PLAN  # the device calls: files packed into carries of at most 60 MB
import glob, os
files = sorted(glob.glob(".whl/part.*")) + sorted(glob.glob(".ort/*.onnx"), key=os.path.getsize, reverse=True)
calls, cur, size = [], [], 0
for f in files:
    if cur and size + os.path.getsize(f) > 60e6:
        calls.append(cur)
        cur, size = [], 0
    cur.append(f)
    size += os.path.getsize(f)
cur.append(".whl/small")
calls.append(cur)
print("# one device call a line, back to back (/tmp is lost once the machine idles ~30 s); carry the")
print("# paths named (git-ignored, so they travel only when carried)")
for i, c in enumerate(calls):
    cmd = "bench --videos 20000" if i == len(calls) - 1 else "stash"
    print(f"bash benchmarks/gpu_run.sh {cmd:<22} carry: {' '.join(c)}")
PYEOF
cat .whl/PLAN

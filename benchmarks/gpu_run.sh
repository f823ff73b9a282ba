#!/usr/bin/env bash
# Device side of benchmarks/gpu_prepare.sh, on a GPU host without network or TensorFlow. A device call
# carries at most 64 MiB and keeps nothing in the repository copy, but /tmp survives between calls while
# the machine stays warm: so each call stashes what it carries there (.whl/PLAN lists the calls).
#   bash benchmarks/gpu_run.sh stash          copy the carried .whl/part.* and .ort/*.onnx to /tmp/yt8m-*
#   bash benchmarks/gpu_run.sh bench [ARGS]   stash too, join the wheel parts, install them and .whl/small/*
#                                             into /tmp/yt8m-site, run bench_infer_gpu.py on the stashed
#                                             models (ARGS go to it); a copy of its output in $OUT if set
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=/tmp/yt8m-parts
MODELS=/tmp/yt8m-models
SITE=/tmp/yt8m-site
PY=${PY:-python3}
mkdir -p "$PARTS" "$MODELS"
shopt -s nullglob
stash() {
  local parts=(.whl/part.*) models=(.ort/*.onnx)
  [ ${#parts[@]} -eq 0 ] || cp "${parts[@]}" "$PARTS"/
  [ ${#models[@]} -eq 0 ] || cp "${models[@]}" "$MODELS"/
  ls -la "$PARTS" "$MODELS"
}
case "${1:-}" in
  stash)
    stash
    ;;
  bench)
    shift
    stash
    name=$(cat .whl/small/ORT_WHEEL_NAME)
    if [ ! -d "$SITE/onnxruntime" ]; then
      parts=("$PARTS"/part.*)
      [ ${#parts[@]} -gt 0 ] || { echo "no wheel parts stashed in $PARTS: run 'stash' calls first" >&2; exit 2; }
      cat $(printf '%s\n' "${parts[@]}" | sort) > "/tmp/$name"
      "$PY" -m pip install -q --no-deps --no-index --target "$SITE" "/tmp/$name" .whl/small/*.whl
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
    models=("$MODELS"/*.onnx)
    [ ${#models[@]} -gt 0 ] || { echo "no models stashed in $MODELS" >&2; exit 2; }
    "$PY" benchmarks/bench_infer_gpu.py "${models[@]}" "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_bench.txt"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_run.sh stash | bench [bench_infer_gpu.py options]" >&2
    exit 2
    ;;
esac

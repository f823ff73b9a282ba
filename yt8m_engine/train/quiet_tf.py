"""TensorFlow, imported without its native start-up lines.

Loading TensorFlow writes straight to file descriptor 2 (not through Python), twice on every train and
export: absl's "All log messages before absl::InitializeLog() ...", the CUDA stub's "Could not find
cuda drivers ...", oneDNN's notice. Nothing there is for the user to act on, and TF_CPP_MIN_LOG_LEVEL
does not reach the first two: descriptor 2 points at /dev/null while the library loads. A failed import
still raises its exception (with its message); everything after the import prints as usual.
Modules of train/ take `tf` from here instead of importing tensorflow themselves.

TensorFlow's CPU tensors come from its BFC allocator (TF_CPU_ALLOCATOR_USE_BFC, unless set otherwise):
with malloc, every buffer over glibc's 32 MB mmap ceiling (a MoE's 53 MB gate gradient) was fresh
pages each step, 22 000 page faults a step at batch 64 (MoE 190 -> 127 ms a step; peak RSS the same
for most models, ~100 MB more for the MoE). TensorFlow caps that pool at 64 GB unless
TF_CPU_BFC_MEM_LIMIT_IN_MB says otherwise; TF_CPU_ALLOCATOR_USE_BFC=false restores malloc.

Keras is imported here too, with matplotlib.pyplot out of its reach: Keras imports pyplot at start-up
where matplotlib is installed (for plotting helpers this engine never calls), ~1 s and 12 MB of every
train, eval-of-a-checkpoint and export; later imports of pyplot in the process work as usual.
"""
from __future__ import annotations

import os
import sys


def import_tensorflow():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    block = "matplotlib.pyplot" not in sys.modules
    if block:
        sys.modules["matplotlib.pyplot"] = None  # an ImportError for Keras' optional import
    try:
        return _import_quietly()
    finally:
        if block and sys.modules.get("matplotlib.pyplot", 0) is None:
            del sys.modules["matplotlib.pyplot"]


def _import_quietly():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to silence
        saved = None
    try:
        if saved is not None:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
        import keras  # noqa: F401
        import tensorflow
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def xla_products_without_ynnpack() -> None:
    """XLA's own matrix products (Eigen) instead of its YNNPACK fusions, for the compilations that follow in this
    process (the flag is read at the first; one the user set in XLA_FLAGS stays). On a 2-core AVX-512 EPYC,
    a [64, 1152] x [1152, 3862] product took 4.7 ms through YNNPACK and 2.9 ms without (TensorFlow's own
    MatMul: 1.8 ms); video-level MoE trained at batch 64 at 1400-1450 ex/s without against 1120 with it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_experimental_ynn_fusion_type=").strip()


tf = import_tensorflow()

"""TensorFlow ops of our own, compiled from their C++ source on first use and cached.

`clipped_adam()` loads Yt8mClippedAdam (clipped_adam.cc): the L2 penalty's gradient, the clip by norm and
Adam's update of one variable in two passes over its weights, where TensorFlow's ops take fifteen (the
penalty's gradient and its sum, the norm, the scaling, ResourceApplyAdam). Where the weights are many and
the batch small, those passes are a large part of a training step (LogisticModel at batch 64 on 2 cores:
Adam 22% of the samples, the penalty and the clip ~17%).

The build runs the C++ compiler ($CXX, else c++) with TensorFlow's own flags (tf.sysconfig), about 15 s
once; the library goes to __pycache__ beside the source where that is writable (as Numba's cache), else to
the user cache (YT8M_ENGINE_CACHE, else ~/.cache/yt8m-engine), named by a hash of the source, the
TensorFlow build and the compiler, so an upgrade rebuilds it. Where it cannot be built (no compiler, an
error), training says so once and uses TensorFlow's ops: the same maths, slower; a failed build is not
retried until its `.failed` file (which holds the compiler's output) is deleted. YT8M_ENGINE_NATIVE_OPS=0
turns the ops off.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from ..quiet_tf import tf

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clipped_adam.cc")
_loaded: dict = {}  # "clipped_adam": (module or None, why)


def _cache_dirs() -> list[str]:
    from ...io.files import cache_dir

    return [os.path.join(os.path.dirname(_SOURCE), "__pycache__"), os.path.join(cache_dir(), "ops")]


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    return shutil.which(cxx) if cxx else (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"))


def _command(cxx: str, out: str) -> list[str]:
    cmd = [cxx, "-shared", "-fPIC", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fopenmp-simd", "-w",
           *tf.sysconfig.get_compile_flags(), _SOURCE, "-o", out, *tf.sysconfig.get_link_flags()]
    if platform.system() == "Darwin":
        cmd += ["-undefined", "dynamic_lookup"]
    return cmd


def _key(cxx: str | None) -> str:
    with open(_SOURCE, "rb") as f:
        src = f.read()
    parts = [src, tf.__version__.encode(), tf.sysconfig.get_build_info().get("cpu_compiler", "").encode(),
             " ".join(tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()).encode(),
             str(cxx).encode(), platform.machine().encode()]
    return hashlib.sha1(b"\0".join(parts)).hexdigest()[:16]


def _build(name: str, echo) -> tuple:
    """(module or None, why not)."""
    if os.environ.get("YT8M_ENGINE_NATIVE_OPS", "1") == "0":
        return None, "YT8M_ENGINE_NATIVE_OPS=0"
    cxx = _compiler()
    key = _key(cxx)
    dirs = _cache_dirs()

    def paths(d: str) -> tuple:  # (the library, the failed build's compiler output) in place d
        return os.path.join(d, f"{name}-{key}.so"), os.path.join(d, f"{name}-{key}.failed")

    for d in dirs:  # built already (or failed already) in one of the places
        lib, failed = paths(d)
        if os.path.exists(lib):
            try:
                return tf.load_op_library(lib), ""
            except Exception as e:  # noqa: BLE001 - a library that does not load: build it again
                why = f"{lib} does not load ({str(e).splitlines()[0][:200]})"
                echo(f"note: {why}; building it again")
        if os.path.exists(failed):
            return None, f"an earlier build failed (compiler output: {failed}; delete it to try again)"
    if cxx is None:
        why = "no C++ compiler found (install g++, or set CXX)"
    else:
        for d in dirs:
            try:
                os.makedirs(d, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{name}-", dir=d)
                os.close(fd)
            except OSError:
                continue  # not writable: the next place
            echo(f"building the fused Adam op for this machine, once (about 15 s; cached in {d})")
            lib, failed = paths(d)
            cmd = _command(cxx, tmp)
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                if run.returncode == 0:
                    os.replace(tmp, lib)
                    return tf.load_op_library(lib), ""
                output = run.stdout + run.stderr
            except (OSError, subprocess.SubprocessError, tf.errors.OpError) as e:
                output = f"{type(e).__name__}: {e}"
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            try:
                with open(failed, "w") as f:
                    f.write(" ".join(cmd) + "\n\n" + output)
            except OSError:
                pass
            why = f"the build failed (compiler output: {failed})"
            break
        else:
            why = f"no writable place for it ({', '.join(dirs)})"
    echo(f"note: training uses TensorFlow's Adam ops, slower: {why}")
    return None, why


def clipped_adam(echo=print):
    """The loaded ops module (its `yt8m_clipped_adam`), or None where it cannot be built; built once a process."""
    if "clipped_adam" not in _loaded:
        _loaded["clipped_adam"] = _build("clipped_adam", echo)
    return _loaded["clipped_adam"][0]

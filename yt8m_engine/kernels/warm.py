"""Numba's one-time set-up, done ahead of the first real kernel."""
import gc

from numba import njit

from .. import kernels


@njit(cache=True)
def _ready(x):
    return x + 1


def warm_up() -> None:
    """Numba's one-time set-up of its compiler context, which the first kernel a process loads from the
    cache pays (~0.15 s, holding the GIL), done here on a tiny kernel: callers run it while ONNX Runtime
    loads a model on another thread (which releases the GIL)."""
    _ready(1)
    if kernels.FREEZE_AFTER_WARM_UP:
        kernels.FREEZE_AFTER_WARM_UP = False  # once: a polling eval's later rounds leave the collector be
        gc.freeze()

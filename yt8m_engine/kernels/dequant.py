"""Dequantization of uint8 features: exactly the starter's `q * 4/255 + (4/512 - 2)` in float32."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..format import DEQUANT_BIAS, DEQUANT_SCALE


@njit(cache=True, nogil=True)
def _dequantize(q, out, scale, bias):
    flat_q = q.reshape(-1)
    flat_o = out.reshape(-1)
    for i in range(flat_q.shape[0]):
        flat_o[i] = np.float32(flat_q[i]) * scale + bias


def dequantize(q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 features from uint8 ones (any shape). Releases the GIL, so threads can share the work."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    if out is None:
        out = np.empty(q.shape, np.float32)
    _dequantize(q, out, DEQUANT_SCALE, DEQUANT_BIAS)
    return out

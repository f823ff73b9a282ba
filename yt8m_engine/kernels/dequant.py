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


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _mean_frames(frames, frame_offsets, num_frames, scale, bias, eps, out):
    d = frames.shape[1]
    x = np.empty(d, np.float32)
    for i in range(num_frames.shape[0]):
        acc = out[i]
        acc[:] = 0
        n = num_frames[i]
        for t in range(frame_offsets[i], frame_offsets[i] + n):
            q = frames[t]
            ss = np.float32(0)
            for j in range(d):
                x[j] = np.float32(q[j]) * scale + bias
                ss += x[j] * x[j]
            w = np.float32(1) / np.sqrt(max(ss, eps))
            for j in range(d):
                acc[j] += x[j] * w
        if n > 0:
            c = np.float32(1) / np.float32(n)
            for j in range(d):
                acc[j] *= c


def mean_frames(frames: np.ndarray, frame_offsets: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
    """float32 [n, D]: each video's mean over its frames of the dequantized, L2-normalised frames (the
    train layers' FrameInput then the mean over valid frames; zeros for a video without frames), from
    a reader Batch's uint8 frames (video i: rows frame_offsets[i] to + num_frames[i]). One pass over the
    bytes, in float32; single-threaded and releasing the GIL (tf.data runs several batches at once).
    The float frames are never materialised: as a layer this was a [B, T, D] float32 tensor (88 MB for 64
    videos of 300 frames) written and read several times."""
    out = np.empty((len(num_frames), frames.shape[1]), np.float32)
    _mean_frames(np.ascontiguousarray(frames, np.uint8), np.asarray(frame_offsets, np.int64),
                 np.asarray(num_frames, np.int64), np.float32(DEQUANT_SCALE), np.float32(DEQUANT_BIAS),
                 np.float32(1e-12), out)
    return out

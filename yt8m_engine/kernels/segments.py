"""Cut videos into 5-frame segments (Numba): the unit of segment-level inference and evaluation."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..format import SEGMENT_SIZE


@njit(cache=True, nogil=True)
def count_segments(num_frames, size):
    s = 0
    for n in num_frames:
        s += (n + size - 1) // size
    return s


@njit(cache=True, nogil=True)
def _cut(frames, frame_off, num_frames, size, out, seg_num, seg_video, seg_start):
    j = 0
    for i in range(num_frames.shape[0]):
        n = num_frames[i]
        base = frame_off[i]
        for s in range(0, n, size):
            m = min(size, n - s)
            out[j, :m] = frames[base + s:base + s + m]
            if m < size:
                out[j, m:] = 0
            seg_num[j] = m
            seg_video[j] = i
            seg_start[j] = s
            j += 1


def cut_segments(frames: np.ndarray, frame_offsets: np.ndarray, num_frames: np.ndarray, size: int = SEGMENT_SIZE,
                 out: np.ndarray | None = None):
    """Segments starting at 0, size, 2 size, ... below each video's num_frames; a last partial segment
    keeps its true frame count. Returns (frames [S, size, D] uint8, num_frames [S] int32,
    video index [S] int64, start frame [S] int64)."""
    s = int(count_segments(num_frames, size))
    if out is None or out.shape[0] < s:
        out = np.empty((s, size, frames.shape[1]), np.uint8)
    seg = out[:s]
    seg_num = np.empty(s, np.int32)
    seg_video = np.empty(s, np.int64)
    seg_start = np.empty(s, np.int64)
    _cut(frames, frame_offsets, num_frames, size, seg, seg_num, seg_video, seg_start)
    return seg, seg_num, seg_video, seg_start

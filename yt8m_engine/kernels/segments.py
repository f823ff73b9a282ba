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
def _index(num_frames, size, seg_num, seg_video, seg_start):
    j = 0
    for i in range(num_frames.shape[0]):
        n = num_frames[i]
        for s in range(0, n, size):
            seg_num[j] = min(size, n - s)
            seg_video[j] = i
            seg_start[j] = s
            j += 1


@njit(cache=True, nogil=True)
def copy_into(dst, src):
    """dst[:] = src for 1-D views of equal length, as a plain loop (vectorised): 7x faster than Numba's
    slice assignment, which copies through a temporary."""
    for q in range(dst.shape[0]):
        dst[q] = src[q]


@njit(cache=True, nogil=True)
def _cut(frames, frame_off, seg_num, seg_video, seg_start, out):
    for j in range(seg_num.shape[0]):
        m = seg_num[j]
        base = frame_off[seg_video[j]] + seg_start[j]
        for t in range(m):
            copy_into(out[j, t], frames[base + t])
        out[j, m:] = 0


def segment_index(num_frames: np.ndarray, size: int = SEGMENT_SIZE):
    """Segments starting at 0, size, 2 size, ... below each video's num_frames, in video order (a last
    partial segment keeps its true frame count). Returns (num_frames [S] int32, video index [S] int64,
    start frame [S] int64)."""
    s = int(count_segments(num_frames, size))
    seg_num = np.empty(s, np.int32)
    seg_video = np.empty(s, np.int64)
    seg_start = np.empty(s, np.int64)
    _index(num_frames, size, seg_num, seg_video, seg_start)
    return seg_num, seg_video, seg_start


def cut_segments(frames: np.ndarray, frame_offsets: np.ndarray, num_frames: np.ndarray, size: int = SEGMENT_SIZE,
                 out: np.ndarray | None = None):
    """The segments of `segment_index`, copied out of a flat frame array (video i's frames start at
    row frame_offsets[i]). Returns (frames [S, size, D] uint8 zero padded, num_frames [S] int32,
    video index [S] int64, start frame [S] int64)."""
    seg_num, seg_video, seg_start = segment_index(num_frames, size)
    s = seg_num.shape[0]
    if out is None or out.shape[0] < s:
        out = np.empty((s, size, frames.shape[1]), np.uint8)
    seg = out[:s]
    _cut(frames, frame_offsets, seg_num, seg_video, seg_start, seg)
    return seg, seg_num, seg_video, seg_start

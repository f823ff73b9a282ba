"""Per-row top-k of a predictions matrix (Numba): each row's k best (class, score), best first; ties go
to the lower class id. Used by the metrics (each video's top-20), by infer's video CSV and by the
starter's segment mode (each segment's top-k classes)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def _before(s1, c1, s2, c2):
    """Rank order within a video: higher score first, then lower class id."""
    return s1 > s2 or (s1 == s2 and c1 < c2)


@njit(cache=True, nogil=True, inline="always")
def _insert(s, c, m, k, out_c, out_s):
    """Insert (s, c) into the sorted buffer of m <= k entries if it ranks in the top k; returns m."""
    if m == k:
        if not _before(s, c, out_s[k - 1], out_c[k - 1]):
            return m
        j = k - 1
    else:
        j = m
        m += 1
    while j > 0 and _before(s, c, out_s[j - 1], out_c[j - 1]):
        out_s[j] = out_s[j - 1]
        out_c[j] = out_c[j - 1]
        j -= 1
    out_s[j] = s
    out_c[j] = c
    return m


@njit(cache=True, nogil=True)
def topk_scratch(nc, dtype):
    """Work buffers of `topk_row` for rows of nc values: group maxima (padded to a multiple of 16 with
    -inf, so the counting loop runs on whole vectors) and candidates."""
    cmax = np.full((nc // 16 + 15) // 16 * 16 + 16, -np.inf, dtype)
    return cmax, np.empty(nc + 1, dtype), np.empty(nc + 1, np.int32), np.empty(nc // 16 + 1, np.int32)


@njit(cache=True, nogil=True)
def topk_row(row, k, out_c, out_s, scratch):
    """The k best (score, class) of one row, in rank order (higher score, then lower class id).

    The row's first 16 g values are cut into g strided groups {j, j + g, j + 2g, ...} (so the group
    maxima are 15 vectorised elementwise maxima); the k-th largest group maximum is a lower bound of
    the k-th score (k groups each hold a value at least that large), so only the values reaching it
    are candidates, and a few dozen candidates are ranked by counting (branch-free, no sorting).
    A row with NaN takes the plain scan (NaN compares false with everything).
    """
    cmax, cand_s, cand_c, groups = scratch
    n = row.shape[0]
    g = n // 16
    if g >= k:
        nan = False
        for j in range(g):
            cmax[j] = row[j]
            nan |= row[j] != row[j]
        for i in range(1, 16):
            base = i * g
            for j in range(g):
                v = row[base + j]
                nan |= v != v
                cmax[j] = v if v > cmax[j] else cmax[j]
        for c in range(16 * g, n):
            nan |= row[c] != row[c]
        if not nan:
            # the k-th largest group maximum: the largest with at least k maxima >= it (cmax past g
            # holds -inf: the inner loop covers whole vectors)
            gp = (g + 15) // 16 * 16
            thr = -np.inf
            for i in range(g):
                vi = cmax[i]
                cnt = 0
                for j in range(gp):
                    cnt += cmax[j] >= vi
                thr = vi if (cnt >= k and vi > thr) else thr
            ng = 0  # the groups reaching the bound (branch-free), then their values reaching it
            for j in range(g):
                groups[ng] = j
                ng += cmax[j] >= thr
            m = 0
            for t in range(ng):
                j = groups[t]
                for i in range(16):
                    c = j + i * g
                    v = row[c]
                    cand_s[m] = v
                    cand_c[m] = c
                    m += v >= thr
            for c in range(16 * g, n):
                cand_s[m] = row[c]
                cand_c[m] = c
                m += row[c] >= thr
            if m <= 64:  # each candidate's rank is the number of candidates before it
                for i in range(m):
                    si = cand_s[i]
                    ci = cand_c[i]
                    r = 0
                    for j in range(m):
                        r += (cand_s[j] > si) | ((cand_s[j] == si) & (cand_c[j] < ci))
                    if r < k:
                        out_s[r] = si
                        out_c[r] = ci
                return min(m, k)
            r = 0  # many ties at the bound: insertion into the sorted top k
            for i in range(m):
                r = _insert(cand_s[i], cand_c[i], r, k, out_c, out_s)
            return r
    m = 0
    for c in range(n):
        m = _insert(row[c], c, m, k, out_c, out_s)
    return m


@njit(cache=True, nogil=True)
def _topk_rows(preds, k, cls, sc, a, b):
    scratch = topk_scratch(preds.shape[1], preds.dtype)
    for i in range(a, b):
        topk_row(preds[i], k, cls[i], sc[i], scratch)


@njit(cache=True, nogil=True, parallel=True)
def topk(preds, k):
    """Per-row top-k classes and scores of a [n, C] array, in rank order (rows in parallel)."""
    n, nc = preds.shape
    k = min(k, nc)
    cls = np.empty((n, k), np.int32)
    sc = np.empty((n, k), preds.dtype)
    nblk = (n + 255) // 256
    for blk in prange(nblk):
        _topk_rows(preds, k, cls, sc, blk * 256, min(n, blk * 256 + 256))
    return cls, sc


@njit(cache=True, nogil=True)
def topk_serial(preds, k):
    """`topk` on the calling thread only (for callers that are themselves parallel workers)."""
    n, nc = preds.shape
    k = min(k, nc)
    cls = np.empty((n, k), np.int32)
    sc = np.empty((n, k), preds.dtype)
    _topk_rows(preds, k, cls, sc, 0, n)
    return cls, sc

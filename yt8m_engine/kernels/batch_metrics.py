"""Hit@1, PERR and GAP of one batch in NumPy, for the training log.

The same definitions (and tie rules) as metrics.VideoMetrics, without Numba: the training process then
does not load Numba and LLVM (~100 MB of its peak RSS). A batch is at most a few thousand rows, so a
partial sort per row costs a few milliseconds at the log's pace.
"""
from __future__ import annotations

import numpy as np


def batch_metrics(predictions: np.ndarray, labels: np.ndarray, top_k: int = 20) -> dict:
    """{"hit_at_one", "perr", "gap"} of predictions [n, C] against dense labels [n, C] (> 0: positive).

    Ties in a row's ranking go to the lower class id; in the pooled GAP ranking negatives go first."""
    p = np.asarray(predictions, np.float32)
    y = np.asarray(labels) > 0
    n, c = p.shape
    if n == 0:
        return {"hit_at_one": 0.0, "perr": 0.0, "gap": 0.0}
    npos = y.sum(1)
    k = int(min(c, max(top_k, npos.max(initial=1))))
    if k < c:
        part = np.argpartition(-p, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(p, part, 1).min(1)
        tied = np.flatnonzero((p >= kth[:, None]).sum(1) > k)  # ties across the cut: the lower ids are in
        part[tied] = np.argsort(-p[tied], axis=1, kind="stable")[:, :k]
    else:
        part = np.broadcast_to(np.arange(c), (n, c))
    sc = np.take_along_axis(p, part, 1)
    order = np.lexsort((part, -sc), axis=1)           # by score, then class id
    top, sc = np.take_along_axis(part, order, 1), np.take_along_axis(sc, order, 1)
    pos = np.take_along_axis(y, top, 1)
    hit = float(pos[:, 0].mean())
    rows = npos > 0
    within = np.arange(k)[None, :] < npos[:, None]     # each row's first (number of its labels) classes
    found = (pos & within & (sc > 0)).sum(1)
    perr = float((found[rows] / npos[rows]).mean()) if rows.any() else 0.0
    s, lab = sc[:, :top_k].ravel(), pos[:, :top_k].ravel()
    total = int(npos.sum())
    if total == 0:
        return {"hit_at_one": hit, "perr": perr, "gap": 0.0}
    ranked = lab[np.lexsort((lab, -s))]                # by score, negatives first among ties
    hits = np.cumsum(ranked)
    gap = float((hits[ranked] / (np.flatnonzero(ranked) + 1)).sum() / total)
    return {"hit_at_one": hit, "perr": perr, "gap": gap}

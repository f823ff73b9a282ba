"""YouTube-8M metrics as Numba kernels, with the starter code's definitions.

Definitions (starter code `eval_util.py`, `average_precision_calculator.py`,
`mean_average_precision_calculator.py`), and where we differ:

* AP (non-interpolated): rank predictions by confidence; AP = sum over the positives at ranks i of
  precision@i, divided by numpos (the number of positives, or a given total) - with a cut-off n,
  only the first n ranks count and the divisor is min(numpos, n). numpos == 0 gives 0.
* Ties (equal confidence): the starter shuffles with a fixed seed before a stable sort, so its result
  depends on the shuffle. We rank tied negatives before tied positives: deterministic, and never
  optimistic (the reason for the starter's shuffle).
* GAP@k: each video's top-k predictions (ties: lower class id first) are pooled and ranked; AP is
  divided by all positive labels, including those outside the top-k.
* mAP: per class, AP over the videos whose top-k holds that class, divided by all positives of the
  class (the starter's `top_k_by_class`); classes without positives are dropped (starter default),
  `keep_empty_classes=True` counts them as 0.
* Hit@1: share of videos whose top prediction (ties: lower class id) is a true label.
* PERR: per video with k labels, the share of true labels among its top-k predictions with
  confidence > 0. Unlike the starter, videos without labels are skipped (the starter counts them as 0
  and so lowers PERR by the share of unlabelled videos).
* Kaggle 2019 segment MAP@K (computed in score.py from a submission and in evaluate.py from the
  segment scores): per class, the submitted segments (truncated at K) keep only the rated (segment,
  class) pairs; AP over that list is divided by min(positives of the class, K); the mean is over the
  classes in the submission that have at least one positive rating (0/0 is undefined).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import topk_row, topk_scratch


# -- per-batch kernels ---------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _has_label(labels, a, b, c):
    for j in range(a, b):
        if labels[j] == c:
            return True
    return False


@njit(cache=True, nogil=True)
def _stats_rows(preds, lab_off, labels, a, b, top_cls, top_sc, top_pos, hit, perr):
    """batch_stats for rows a..b (one thread)."""
    nc = preds.shape[1]
    kk = top_cls.shape[1]
    maxl = 0
    for i in range(a, b):
        maxl = max(maxl, lab_off[i + 1] - lab_off[i])
    mm = max(kk, min(maxl, nc))
    scratch = topk_scratch(nc, preds.dtype)
    cbuf = np.empty(mm, np.int32)
    sbuf = np.empty(mm, preds.dtype)
    for i in range(a, b):
        _row_stats(preds[i], labels, lab_off[i], lab_off[i + 1], kk, i, top_cls, top_sc, top_pos, hit, perr,
                   cbuf, sbuf, scratch)


@njit(cache=True, nogil=True)
def _stats_out(n, kk, dtype):
    """batch_stats' outputs: top classes, scores and label flags [n, kk], Hit@1 [n], PERR [n] (NaN)."""
    return (np.empty((n, kk), np.int32), np.empty((n, kk), dtype), np.zeros((n, kk), np.uint8),
            np.zeros(n, np.float64), np.full(n, np.nan))


@njit(cache=True, nogil=True, parallel=True)
def batch_stats(preds, lab_off, labels, k):
    """One pass over a batch: top-k, Hit@1, PERR and the top-k label flags.

    preds [n, C]; labels CSR (lab_off [n + 1], labels). Returns (top_cls [n, k], top_score [n, k],
    top_is_pos uint8 [n, k], hit [n] (0/1), perr [n] (NaN for videos without labels)).
    """
    n = preds.shape[0]
    top_cls, top_sc, top_pos, hit, perr = _stats_out(n, min(k, preds.shape[1]), preds.dtype)
    nblk = (n + 255) // 256
    for blk in prange(nblk):
        _stats_rows(preds, lab_off, labels, blk * 256, min(n, blk * 256 + 256), top_cls, top_sc, top_pos, hit, perr)
    return top_cls, top_sc, top_pos, hit, perr


@njit(cache=True, nogil=True)
def batch_stats_serial(preds, lab_off, labels, k):
    """`batch_stats` on the calling thread only (for callers that are themselves parallel workers)."""
    n = preds.shape[0]
    top_cls, top_sc, top_pos, hit, perr = _stats_out(n, min(k, preds.shape[1]), preds.dtype)
    _stats_rows(preds, lab_off, labels, 0, n, top_cls, top_sc, top_pos, hit, perr)
    return top_cls, top_sc, top_pos, hit, perr


@njit(cache=True, nogil=True)
def cross_entropy_sum(preds, lab_off, labels, eps=1e-5):
    """Sum over rows of the starter's CrossEntropyLoss, -sum_c [y log(p + eps) + (1 - y) log(1 - p + eps)],
    with y the row's labels (CSR; a label listed twice counts once). One thread, no dense label matrix."""
    total = 0.0
    for i in range(preds.shape[0]):
        row = 0.0
        for c in range(preds.shape[1]):
            row += np.log(1.0 - np.float64(preds[i, c]) + eps)
        for j in range(lab_off[i], lab_off[i + 1]):
            c = labels[j]
            again = False
            for t in range(lab_off[i], j):
                again |= labels[t] == c
            if not again:
                p = np.float64(preds[i, c])
                row += np.log(p + eps) - np.log(1.0 - p + eps)
        total -= row
    return total


@njit(cache=True, nogil=True)
def _row_stats(row, labels, a, b, kk, i, top_cls, top_sc, top_pos, hit, perr, cbuf, sbuf, scratch):
    nc = row.shape[0]
    nl = b - a
    m = max(kk, min(nl, nc))
    topk_row(row, m, cbuf, sbuf, scratch)
    for j in range(kk):
        top_cls[i, j] = cbuf[j]
        top_sc[i, j] = sbuf[j]
        if _has_label(labels, a, b, cbuf[j]):
            top_pos[i, j] = 1
    if nl > 0:
        if _has_label(labels, a, b, cbuf[0]):
            hit[i] = 1.0
        good = 0
        kl = min(nl, nc)
        for j in range(kl):
            if sbuf[j] > 0 and _has_label(labels, a, b, cbuf[j]):
                good += 1
        perr[i] = good / kl


# -- AP over ranked lists ------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def ap_sorted(is_pos, numpos, n):
    """AP of a list already in rank order; n <= 0 means no cut-off."""
    if numpos <= 0:
        return 0.0
    r = is_pos.shape[0]
    if n > 0:
        r = min(r, n)
        numpos = min(numpos, n)
    hits = 0
    ap = 0.0
    for i in range(r):
        if is_pos[i]:
            hits += 1
            ap += hits / (i + 1.0)
    return ap / numpos


@njit(cache=True, nogil=True)
def ap_groups(is_pos, group_start, numpos, n):
    """AP of each group of a list sorted by (group, rank): group g is is_pos[group_start[g]:group_start[g+1]]."""
    g = group_start.shape[0] - 1
    out = np.zeros(g, np.float64)
    for j in range(g):
        out[j] = ap_sorted(is_pos[group_start[j]:group_start[j + 1]], numpos[j], n)
    return out


def rank_keys(scores: np.ndarray, is_pos: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """uint64 keys whose ascending order is the rank order: by group, then score descending, then
    tied negatives before tied positives; the low bit is the positive flag."""
    b = np.ascontiguousarray(scores, np.float32).view(np.uint32)
    asc = np.where(b & np.uint32(0x80000000), ~b, b | np.uint32(0x80000000))  # order-preserving
    keys = ((~asc).astype(np.uint64) << np.uint64(1)) | (np.asarray(is_pos) > 0).astype(np.uint64)
    if group is not None:
        keys |= group.astype(np.uint64) << np.uint64(33)
    return keys


def ranked_flags(scores, is_pos, group=None) -> np.ndarray:
    """Positive flags (uint8) in rank order (see rank_keys)."""
    keys = rank_keys(scores, is_pos, group)
    return (np.sort(keys) & np.uint64(1)).astype(np.uint8)  # numpy's SIMD sort where the CPU has it


def average_precision(scores, is_pos, numpos: int | None = None, n: int | None = None) -> float:
    """Non-interpolated AP of one list of predictions (see the module docstring)."""
    scores = np.asarray(scores)
    is_pos = np.asarray(is_pos) > 0
    numpos = int(is_pos.sum()) if numpos is None else int(numpos)
    return float(ap_sorted(ranked_flags(scores, is_pos), numpos, n or 0))


# -- streaming accumulators ----------------------------------------------------------------------
class _Growable:
    """A growable 1-d numpy array (amortised doubling): no Python object per element."""

    def __init__(self, dtype):
        self.a = np.empty(1024, dtype)
        self.n = 0

    def extend(self, x: np.ndarray) -> None:
        x = x.reshape(-1)
        if self.n + x.size > self.a.size:
            b = np.empty(max(self.a.size * 2, self.n + x.size), self.a.dtype)
            b[:self.n] = self.a[:self.n]
            self.a = b
        self.a[self.n:self.n + x.size] = x
        self.n += x.size

    @property
    def values(self) -> np.ndarray:
        return self.a[:self.n]


class VideoMetrics:
    """Accumulates Hit@1, PERR, GAP@k and mAP over batches of (predictions, labels).

    Memory: 7 bytes per kept top-k prediction plus one counter per class (the starter keeps a Python
    tuple per prediction in heaps).
    """

    def __init__(self, num_classes: int, top_k: int = 20):
        self.num_classes = int(num_classes)
        self.top_k = int(top_k)
        self.positives = np.zeros(num_classes, np.int64)
        self.hits = 0.0
        self.perr_sum = 0.0
        self.perr_rows = 0
        self.videos = 0
        self.loss_sum = 0.0
        self._scores = _Growable(np.float32)
        self._pos = _Growable(np.uint8)
        self._cls = _Growable(np.int16 if num_classes < 32768 else np.int32)

    def add(self, predictions: np.ndarray, lab_off: np.ndarray, labels: np.ndarray, loss: float | None = None,
            parallel: bool = True) -> None:
        """predictions [n, C] float; labels as CSR (offsets [n + 1], class ids). parallel=False: on the
        calling thread only (for callers that are themselves parallel workers)."""
        preds = np.ascontiguousarray(predictions, dtype=np.float32)
        n = preds.shape[0]
        if n == 0:
            return
        labels = np.asarray(labels, np.int64)
        stats = batch_stats if parallel else batch_stats_serial
        top_cls, top_sc, top_pos, hit, perr = stats(preds, np.asarray(lab_off, np.int64), labels, self.top_k)
        self.positives += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        self.hits += float(hit.sum())
        ok = ~np.isnan(perr)
        self.perr_sum += float(perr[ok].sum())
        self.perr_rows += int(ok.sum())
        self.videos += n
        if loss is not None:
            self.loss_sum += float(loss) * n
        self._scores.extend(top_sc)
        self._pos.extend(top_pos)
        self._cls.extend(top_cls.astype(self._cls.a.dtype))

    def merge(self, other: "VideoMetrics") -> None:
        """Take in what another accumulator (of the same classes and k) has seen."""
        assert other.num_classes == self.num_classes and other.top_k == self.top_k
        self.positives += other.positives
        self.hits += other.hits
        self.perr_sum += other.perr_sum
        self.perr_rows += other.perr_rows
        self.videos += other.videos
        self.loss_sum += other.loss_sum
        self._scores.extend(other._scores.values)
        self._pos.extend(other._pos.values)
        self._cls.extend(other._cls.values)

    def add_dense(self, predictions: np.ndarray, dense_labels: np.ndarray, loss: float | None = None) -> None:
        rows, cls = np.nonzero(np.asarray(dense_labels) > 0)
        off = np.zeros(len(dense_labels) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(dense_labels)), out=off[1:])
        self.add(predictions, off, cls, loss)

    def gap(self) -> float:
        flags = ranked_flags(self._scores.values, self._pos.values)
        return float(ap_sorted(flags, int(self.positives.sum()), 0))

    def class_aps(self) -> np.ndarray:
        """AP per class (the starter's per-class calculators over top-k predictions); NaN: no positives."""
        c = self._cls.values
        flags = ranked_flags(self._scores.values, self._pos.values, c)
        counts = np.bincount(c, minlength=self.num_classes)
        start = np.zeros(self.num_classes + 1, np.int64)
        np.cumsum(counts, out=start[1:])
        aps = ap_groups(flags, start, self.positives, 0)
        aps[self.positives == 0] = np.nan
        return aps

    def mean_ap(self, keep_empty_classes: bool = False) -> float:
        aps = self.class_aps()
        if keep_empty_classes:
            return float(np.nan_to_num(aps).mean())
        ok = ~np.isnan(aps)
        return float(aps[ok].mean()) if ok.any() else 0.0

    def results(self) -> dict:
        return {
            "videos": self.videos,
            "hit_at_one": self.hits / self.videos if self.videos else 0.0,
            "perr": self.perr_sum / self.perr_rows if self.perr_rows else 0.0,
            "gap": self.gap(),
            "map": self.mean_ap(),
            "loss": self.loss_sum / self.videos if self.videos else 0.0,
        }

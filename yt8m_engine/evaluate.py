"""`yt8m-engine eval`: Hit@1, PERR, GAP, mAP and loss of a model (train_dir checkpoint or ONNX file),
plus with --segment_labels the starter's metrics over rated segments and the Kaggle 2019 MAP@K.

Writes metrics.json, class_ap.csv (with names from a vocabulary.csv), metrics.png, and TensorBoard
eval summaries when TensorFlow is present.
"""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from . import format as fmt
from .errors import Yt8mError
from .io.reader import Reader, resolve_files
from .engine import predict_segments, predict_videos
from .io.tfrecord import AtomicWriter
from .kernels.metrics import VideoMetrics, ranked_flags, segment_map
from .rank.topn import TopN, segment_keys


def load_predictor(model: str, providers: str = "auto"):
    """An ONNX file (no TensorFlow) or a train_dir (Keras, latest checkpoint)."""
    if os.path.isdir(model):
        from .train.trainer import KerasPredictor

        return KerasPredictor(model)
    from .engine import OnnxModel

    return OnnxModel(model, providers)


def _remap(lab_off, labels, lut):
    """CSR labels in class ids -> CSR labels in output columns (labels without a column dropped)."""
    cols = lut[labels]
    keep = cols >= 0
    rows = np.repeat(np.arange(len(lab_off) - 1), np.diff(lab_off))[keep]
    off = np.zeros(len(lab_off), np.int64)
    np.cumsum(np.bincount(rows, minlength=len(lab_off) - 1), out=off[1:])
    return off, cols[keep]


def _cross_entropy(preds, off, cols, eps=1e-5):
    dense = np.zeros(preds.shape, np.float32)
    dense[np.repeat(np.arange(preds.shape[0]), np.diff(off)), cols] = 1
    p = preds.astype(np.float64)
    loss = -(dense * np.log(p + eps) + (1 - dense) * np.log(1 - p + eps)).sum(1)
    return float(loss.mean()) if loss.size else 0.0


def evaluate(model: str, eval_data_pattern: str, *, segment_labels: bool = False, batch_size: int = 256,
             top_k: int = 20, top_n: int = 100000, segment_label_ids_file: str | None = None,
             skip_corrupt: bool = False, providers: str = "auto", predictor=None, progress=None) -> dict:
    """Evaluate; returns the metrics dict (and keeps per-class APs and PR points under private keys)."""
    t0 = time.perf_counter()
    pred = predictor or load_predictor(model, providers)
    info = pred.info
    files = resolve_files(eval_data_pattern)
    class_ids = info.class_ids
    lut = np.full(fmt.NUM_CLASSES, -1, np.int64)
    lut[class_ids] = np.arange(class_ids.size)
    vm = VideoMetrics(class_ids.size, top_k=top_k)
    loss_sum = 0.0
    if segment_labels:
        if not info.frame_features:
            raise Yt8mError("--segment_labels needs a frame-level model")
        seg_ids = fmt.load_segment_label_ids(segment_label_ids_file)
        seg_cols = np.array([lut[c] for c in seg_ids])
        if (seg_cols < 0).any():
            raise Yt8mError(f"{model}: the model has no output for some segment classes")
        seg_lut = np.full(fmt.NUM_CLASSES, -1, np.int64)
        seg_lut[seg_ids] = np.arange(seg_ids.size)
        sm = VideoMetrics(seg_ids.size, top_k=top_k)
        ranker = TopN(seg_ids.size, top_n)
        rated_keys, rated_cols, rated_labels = [], [], []
    reader = Reader(info.spec, segments=segment_labels, skip_corrupt=skip_corrupt,
                    pad_frames=fmt.SEGMENT_SIZE if segment_labels else 1)  # segments without a copy
    for fidx, path in enumerate(files):
        for b in reader.read_file(path, batch_size=512):
            preds = predict_videos(pred, b, batch_size)
            off, cols = _remap(b.label_offsets, b.labels, lut)
            vm.add(preds, off, cols)
            loss_sum += _cross_entropy(preds, off, cols) * len(b)
            if segment_labels:
                frames, nf, sv, ss = b.segments()
                sp = predict_segments(pred, frames, nf, batch_size, seg_cols)
                keys = segment_keys(fidx, b.record_index[sv], ss)
                ranker.push(sp, keys)
                # the rated segments
                rv = np.repeat(np.arange(len(b)), np.diff(b.segment_offsets))
                rk = segment_keys(fidx, b.record_index[rv], b.segment_starts)
                rc = seg_lut[b.segment_labels]
                ok = rc >= 0
                positive = b.segment_scores[ok] > 0.5
                rated_keys.append(rk[ok])
                rated_cols.append(rc[ok])
                rated_labels.append(positive.astype(np.int64))
                _starter_segment_metrics(sm, sp, keys, rk[ok], rc[ok], positive)
            if progress:
                progress(vm.videos)
    res = vm.results()
    res["loss"] = loss_sum / max(vm.videos, 1)
    res["model"] = info.model
    res["step"] = info.step
    res["corrupt"] = reader.corrupt
    res["_class_aps"] = vm.class_aps()
    res["_class_ids"] = class_ids
    res["_positives"] = vm.positives
    res["_pr"] = _pr_points(vm)
    if segment_labels:
        seg_res = sm.results()
        res["segment"] = {k: seg_res[k] for k in ("hit_at_one", "perr", "gap", "map")}
        res["segment"]["rated_segments"] = seg_res["videos"]
        rk, rc, rl = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rated_keys, rated_cols, rated_labels))
        s, k, c = ranker.result()
        m, per_class = _kaggle_map(k, c, rk, rc, rl, seg_ids, top_n)
        res["segment_map"] = m
        res["segment_map_classes"] = len(per_class)
        res["top_n"] = top_n
    res["seconds"] = time.perf_counter() - t0
    return res


def _starter_segment_metrics(sm: VideoMetrics, sp, keys, rk, rc, positive):
    """The starter's segment eval: each rated segment is an example whose predictions are masked to
    its rated classes (unrated classes cannot count as false positives)."""
    if rk.size == 0:
        return
    order = np.argsort(keys)
    rows = order[np.searchsorted(keys[order], rk)]
    uniq, inv = np.unique(rows, return_inverse=True)
    mask = np.zeros((uniq.size, sp.shape[1]), np.float32)
    mask[inv, rc] = 1
    p = sp[uniq] * mask
    pos_rows = inv[positive]
    pos_cols = rc[positive]
    order2 = np.lexsort((pos_cols, pos_rows))
    off = np.zeros(uniq.size + 1, np.int64)
    np.cumsum(np.bincount(pos_rows, minlength=uniq.size), out=off[1:])
    sm.add(p, off, pos_cols[order2])


def _kaggle_map(keys, counts, rk, rc, rl, seg_ids, top_n):
    entries_c, entries_r, entries_l = [], [], []
    positives = np.zeros(seg_ids.size, np.int64)
    np.add.at(positives, rc[rl == 1], 1)
    for j in range(seg_ids.size):
        m = int(counts[j])
        sel = rc == j
        lab = np.full(m, -1, np.int64)
        if sel.any() and m:
            o = np.argsort(rk[sel])
            sk, sl = rk[sel][o], rl[sel][o]
            pos = np.searchsorted(sk, keys[j, :m])
            hit = (pos < sk.size) & (sk[np.minimum(pos, sk.size - 1)] == keys[j, :m])
            lab[hit] = sl[pos[hit]]
        entries_c.append(np.full(m, seg_ids[j], np.int64))
        entries_r.append(np.arange(m, dtype=np.int64))
        entries_l.append(lab)
    pos_by_class = {int(c): int(p) for c, p in zip(seg_ids, positives)}
    return segment_map(np.concatenate(entries_c), np.concatenate(entries_r), np.concatenate(entries_l),
                       pos_by_class, top_n, classes=np.asarray(seg_ids, np.int64))


def _pr_points(vm: VideoMetrics, points: int = 200):
    flags = ranked_flags(vm._scores.values, vm._pos.values)
    if flags.size == 0:
        return np.zeros(0), np.zeros(0)
    tp = np.cumsum(flags)
    idx = np.unique(np.linspace(0, flags.size - 1, points).astype(np.int64))
    precision = tp[idx] / (idx + 1)
    recall = tp[idx] / max(int(vm.positives.sum()), 1)
    return precision, recall


def public(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def write_reports(res: dict, out_dir: str, vocabulary: str | None = None) -> list[str]:
    """metrics.json, class_ap.csv and metrics.png in out_dir. Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    names = fmt.load_vocabulary(vocabulary) if vocabulary else {}
    paths = []
    p = os.path.join(out_dir, "metrics.json")
    with AtomicWriter(p, "w") as f:
        json.dump(public(res), f, indent=2, default=float)
    paths.append(p)
    p = os.path.join(out_dir, "class_ap.csv")
    with AtomicWriter(p, "w") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "ap", "positives"])
        for c, ap, n in zip(res["_class_ids"], res["_class_aps"], res["_positives"]):
            if n > 0:
                w.writerow([int(c), names.get(int(c), ""), f"{ap:.6f}", int(n)])
    paths.append(p)
    p = os.path.join(out_dir, "metrics.png")
    _plot(res, p)
    paths.append(p)
    return paths


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aps = res["_class_aps"]
    aps = np.sort(aps[~np.isnan(aps)])[::-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(np.arange(1, aps.size + 1), aps)
    a1.set(title=f"per-class AP (mAP {res['map']:.3f})", xlabel="classes, by AP", ylabel="AP", ylim=(0, 1.02))
    prec, rec = res["_pr"]
    a2.plot(rec, prec)
    a2.set(title=f"precision-recall of the pooled top-{20} (GAP {res['gap']:.3f})", xlabel="recall",
           ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    fig.tight_layout()
    with AtomicWriter(path) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def tensorboard_summaries(res: dict, log_dir: str) -> bool:
    """Eval scalars for TensorBoard (only where TensorFlow is installed)."""
    try:
        import tensorflow as tf
    except ImportError:
        return False
    w = tf.summary.create_file_writer(os.path.join(log_dir, "eval"))
    with w.as_default(step=int(res.get("step", 0))):
        for k in ("hit_at_one", "perr", "gap", "map", "loss", "segment_map"):
            if k in res:
                tf.summary.scalar(f"eval/{k}", float(res[k]))
    w.flush()
    return True

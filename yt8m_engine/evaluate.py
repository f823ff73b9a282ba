"""`yt8m-engine eval`: Hit@1, PERR, GAP, mAP and loss of a model (train_dir checkpoint or ONNX file),
plus with --segment_labels the starter's metrics over rated segments and the Kaggle 2019 MAP@K.

Writes metrics.json, class_ap.csv (with names from a vocabulary.csv), metrics.svg, and TensorBoard
eval summaries when TensorFlow is present.
"""
from __future__ import annotations

import csv
import json
import os
import threading
import time

import numpy as np
from numba import njit, prange

from . import format as fmt
from .engine import OnnxModel, predict_videos, video_batch
from .errors import Yt8mError
from .export.paths import exported
from .pipeline import Options, open_model, run_pipeline, score_segments
from .io.files import AtomicWriter, resolve_files
from .io.tfrecord import frame_record
from .kernels.metrics import VideoMetrics, cross_entropy_sum, ranked_flags
from .rank.keys import segment_keys
from .results import EvalResult
from .rank.topn import SegmentScores
from .train.config import load_config  # (plain data: no TensorFlow)



def _remap(lab_off, labels, lut):
    """CSR labels in class ids -> CSR labels in output columns (labels without a column dropped)."""
    cols = lut[labels]
    keep = cols >= 0
    rows = np.repeat(np.arange(len(lab_off) - 1), np.diff(lab_off))[keep]
    off = np.zeros(len(lab_off), np.int64)
    np.cumsum(np.bincount(rows, minlength=len(lab_off) - 1), out=off[1:])
    return off, cols[keep]


def load_predictor(model: str, providers: str = "auto", checkpoint: str | None = None, classes=("all",),
                   threads: int | None = None) -> list[OnnxModel]:
    """ONNX Runtime models of an ONNX file, or of a train_dir's latest (or given) checkpoint exported
    for each of `classes` (see `exported`)."""
    opts = Options(providers=providers, threads=threads)
    if os.path.isdir(model):
        files = exported(model, checkpoint, classes)
        return [open_model(files[c], opts) for c in classes]
    return [open_model(model, opts)]


class EvalJob:
    """eval as a pipeline job. Video level: each video's predictions against its labels. With
    --segment_labels, as the starter's eval: the 5-frame segments only (every one of them, for the Kaggle
    MAP; the rated ones as examples masked to their rated class for Hit@1, GAP and mAP). Each worker
    accumulates in its own VideoMetrics, merged at the end; rated segments and the per-class segment
    scores of the Kaggle metric are the only shared state."""

    name = "eval"

    def __init__(self, model: OnnxModel, *, segment_labels: bool, batch_size: int, top_k: int, top_n: int,
                 segment_label_ids_file: str | None):
        self.model, self.segment_labels = model, segment_labels
        self.batch_size, self.top_k, self.top_n = batch_size, top_k, top_n
        self.pad_frames = fmt.SEGMENT_SIZE if segment_labels else 1
        self.ratings = segment_labels  # the reader parses the rated segments
        self.chunk = 64 if segment_labels else 256
        self.lock = threading.Lock()
        self.metrics: list[VideoMetrics] = []
        self.loss_sum = 0.0
        self.rated: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if segment_labels:
            if not model.info.frame_features:
                raise Yt8mError("--segment_labels needs a frame-level model")
            self.class_ids = fmt.load_segment_label_ids(segment_label_ids_file)
            self.cols = model.columns_for(self.class_ids)
            self.ranker = SegmentScores(self.class_ids.size, top_n)
        else:
            self.class_ids = model.info.class_ids
        self.lut = np.full(fmt.NUM_CLASSES, -1, np.int64)
        self.lut[self.class_ids] = np.arange(self.class_ids.size)

    def run(self, fidx: int, b, state: dict, tick) -> int:
        if "m" not in state:  # this worker's accumulator
            state["m"] = VideoMetrics(self.class_ids.size, self.top_k)
            with self.lock:
                self.metrics.append(state["m"])
        if not self.segment_labels:
            preds = predict_videos(self.model, b, self.batch_size)
            tick("infer")
            off, cols = _remap(b.label_offsets, b.labels, self.lut)
            state["m"].add(preds, off, cols, parallel=False)
            loss = cross_entropy_sum(preds, off, cols)
            with self.lock:
                self.loss_sum += loss
            tick("rank")
            return 0
        sp, keys, nf = score_segments(self.model, fidx, b, self.batch_size, self.cols, state)
        tick("infer")
        self.ranker.push(sp, keys)  # thread-safe (a lock of its own)
        rv = np.repeat(np.arange(len(b)), np.diff(b.segment_offsets))  # the rated segments
        rk = segment_keys(fidx, b.record_index[rv], b.segment_starts)
        rc = self.lut[b.segment_labels]
        ok = rc >= 0
        positive = b.segment_scores[ok] > 0.5
        with self.lock:
            self.rated.append((rk[ok], rc[ok], positive.astype(np.int64)))
        _starter_segment_metrics(state["m"], sp, keys, rk[ok], rc[ok], positive)
        tick("rank")
        return int(nf.shape[0])


def evaluate(model: str, eval_data_pattern: str, *, segment_labels: bool = False, batch_size: int | None = None,
             top_k: int = 20, top_n: int = 100000, segment_label_ids_file: str | None = None,
             skip_corrupt: bool = False, providers: str = "auto", checkpoint: str | None = None,
             threads: int | None = None, progress: bool = False) -> dict:
    """Evaluate an ONNX file or a train_dir's checkpoint (exported, see `exported`) through the same
    worker pipeline as infer, every metric accumulated in one pass. Returns the metrics dict (with
    per-class APs and PR points under private keys). With segment_labels the metrics are the starter's
    segment metrics over the rated segments (no PERR: with the predictions masked to the rated classes
    it is ~1 for any model) and the Kaggle MAP@top_n over every segment."""
    t0 = time.perf_counter()
    classes = ("all",)
    if segment_labels and os.path.isdir(model):
        from .export.paths import eval_classes

        # segments scored by the 1000-class export where there is one: no arithmetic for other columns
        classes = eval_classes(load_config(model)[0])[-1:]
    pred = load_predictor(model, providers, checkpoint, classes, threads)[0]
    info = pred.info
    # videos a model call as infer's (engine.video_batch), or 64 segments on a CPU
    job = EvalJob(pred, segment_labels=segment_labels, top_k=top_k, top_n=top_n,
                  batch_size=batch_size or ((8192 if pred.on_gpu else 64) if segment_labels else video_batch(pred)),
                  segment_label_ids_file=segment_label_ids_file)
    files = resolve_files(eval_data_pattern)
    stats = run_pipeline(pred, list(enumerate(files)), job, Options(threads=threads, skip_corrupt=skip_corrupt),
                         progress)
    m = VideoMetrics(job.class_ids.size, top_k)
    for part in job.metrics:
        m.merge(part)
    r = m.results()
    res = EvalResult(videos=stats.videos, hit_at_one=r["hit_at_one"])
    if not segment_labels:
        res.update(perr=r["perr"], gap=r["gap"], map=r["map"], loss=job.loss_sum / max(m.videos, 1))
    else:
        res.update(gap=r["gap"], map=r["map"], rated_segments=r["videos"], segments=stats.segments)
        rk, rc, rl = (np.concatenate([x[i] for x in job.rated]) if job.rated else np.zeros(0, np.int64)
                      for i in range(3))
        res["segment_map"], per_class = _kaggle_map(job.ranker, rk, rc, rl, job.class_ids, top_n)
        res["segment_map_classes"] = len(per_class)
        res["top_n"] = top_n
    res.update(model=info.model, step=info.step, corrupt=stats.corrupt, notes=stats.notes)
    res["_class_aps"] = m.class_aps()
    res["_class_ids"] = job.class_ids
    res["_positives"] = m.positives
    res["_pr"] = _pr_points(m)
    res["_top_k"] = top_k
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
    sm.add(p, off, pos_cols[order2], parallel=False)


@njit(cache=True, nogil=True, parallel=True)
def _rated_aps(member, score, rl, start, positives, top_n):
    """Kaggle AP of each class: its rated pairs (class j's at start[j]:start[j + 1], sorted by key) that
    are among its top-N, in rank order (score descending, then key), AP over them divided by
    min(positives, top_n). Unrated segments do not count, so their order is never needed."""
    out = np.zeros(start.shape[0] - 1, np.float64)
    for j in prange(start.shape[0] - 1):
        a, b = start[j], start[j + 1]
        if positives[j] == 0:
            continue
        idx = np.empty(b - a, np.int64)
        m = 0
        for i in range(a, b):
            if member[i]:
                idx[m] = i
                m += 1
        idx = idx[:m]
        order = idx[np.argsort(-score[idx], kind="mergesort")]  # stable: ties stay in key order
        hits = 0
        ap = 0.0
        for i in range(m):
            if rl[order[i]] == 1:
                hits += 1
                ap += hits / (i + 1.0)
        out[j] = ap / min(positives[j], top_n)
    return out


def _kaggle_map(ranker: SegmentScores, rk, rc, rl, seg_ids, top_n):
    """Kaggle 2019 MAP@top_n of the per-class top-N against the rated segments (rk, rc: key and class
    column of each rating; rl: 1 positive, 0 negative). A rating listed twice counts once."""
    order = np.lexsort((rk, rc))
    rk, rc, rl = rk[order], rc[order], rl[order]
    if rk.size:  # one (segment, class) rated twice: its first rating
        first = np.ones(rk.size, np.bool_)
        first[1:] = (rk[1:] != rk[:-1]) | (rc[1:] != rc[:-1])
        rk, rc, rl = rk[first], rc[first], rl[first]
    start = np.searchsorted(rc, np.arange(seg_ids.size + 1)).astype(np.int64)
    positives = np.bincount(rc[rl == 1], minlength=seg_ids.size).astype(np.int64)
    member, score = ranker.rated(rk, rc)
    aps = _rated_aps(member, score, rl.astype(np.int64), start, positives, top_n)
    rated = positives > 0
    per_class = {int(c): float(v) for c, v, r in zip(seg_ids, aps, rated) if r}
    return (float(aps[rated].mean()) if rated.any() else 0.0), per_class


def _pr_points(vm: VideoMetrics, points: int = 200):
    flags = ranked_flags(vm._scores.values, vm._pos.values)
    if flags.size == 0:
        return np.zeros(0), np.zeros(0)
    tp = np.cumsum(flags)
    idx = np.unique(np.linspace(0, flags.size - 1, points).astype(np.int64))
    precision = tp[idx] / (idx + 1)
    recall = tp[idx] / max(int(vm.positives.sum()), 1)
    return precision, recall


def write_reports(res: dict, out_dir: str, vocabulary: str | None = None) -> list[str]:
    """metrics.json, class_ap.csv and metrics.svg in out_dir. Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    names = fmt.load_vocabulary(vocabulary) if vocabulary else {}
    paths = []
    p = os.path.join(out_dir, "metrics.json")
    with AtomicWriter(p, "w") as f:
        json.dump(res.to_dict(), f, indent=2, default=float)
    paths.append(p)
    p = os.path.join(out_dir, "class_ap.csv")
    with AtomicWriter(p, "w") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "ap", "positives"])
        for c, ap, n in zip(res["_class_ids"], res["_class_aps"], res["_positives"]):
            if n > 0:
                w.writerow([int(c), names.get(int(c), ""), f"{ap:.6f}", int(n)])
    paths.append(p)
    p = os.path.join(out_dir, "metrics.svg")
    with AtomicWriter(p, "w") as f:
        f.write(plot_svg(res))
    paths.append(p)
    return paths


def plot_svg(res: dict) -> str:
    """metrics.svg: per-class AP by rank and the precision-recall curve of the pooled top-k, as an SVG
    written here (two line charts: matplotlib cost ~0.35 s of every eval and a dependency)."""
    aps = res["_class_aps"]
    aps = np.sort(aps[~np.isnan(aps)])[::-1]
    prec, rec = res["_pr"]
    panels = [(f"per-class AP (mAP {res['map']:.3f})", "classes, by AP", "AP",
               np.arange(1, aps.size + 1, dtype=np.float64), aps, max(aps.size, 1)),
              (f"precision-recall of the pooled top-{res.get('_top_k', 20)} (GAP {res['gap']:.3f})", "recall",
               "precision", np.asarray(rec, np.float64), np.asarray(prec, np.float64), 1.0)]
    w, h, left, top, pw, ph = 1000, 380, 70, 40, 380, 270
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="sans-serif" font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>']
    for i, (title, xlabel, ylabel, x, y, xmax) in enumerate(panels):
        x0 = left + i * (pw + 2 * left)
        sx = pw / xmax
        out.append(f'<g transform="translate({x0},{top})">')
        out.append(f'<text x="{pw / 2}" y="-14" text-anchor="middle" font-size="14">{_xml(title)}</text>')
        out.append(f'<rect width="{pw}" height="{ph}" fill="none" stroke="black"/>')
        for t in np.linspace(0, 1, 6):  # y: 0 .. 1
            yy = ph - t * ph / 1.02
            out.append(f'<line x1="-4" x2="0" y1="{yy:.1f}" y2="{yy:.1f}" stroke="black"/>'
                       f'<text x="-7" y="{yy + 4:.1f}" text-anchor="end">{t:.1f}</text>')
        for t in _ticks(xmax):
            xx = t * sx
            out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{ph}" y2="{ph + 4}" stroke="black"/>'
                       f'<text x="{xx:.1f}" y="{ph + 17}" text-anchor="middle">{t:g}</text>')
        out.append(f'<text x="{pw / 2}" y="{ph + 34}" text-anchor="middle">{_xml(xlabel)}</text>')
        out.append(f'<text transform="translate(-45,{ph / 2}) rotate(-90)" text-anchor="middle">{_xml(ylabel)}</text>')
        if x.size:
            keep = np.unique(np.linspace(0, x.size - 1, min(x.size, 2000)).astype(np.int64))
            pts = " ".join(f"{a * sx:.1f},{ph - b * ph / 1.02:.1f}" for a, b in zip(x[keep], y[keep]))
            out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
        out.append("</g>")
    out.append("</svg>\n")
    return "\n".join(out)


def _ticks(xmax: float) -> np.ndarray:
    """Up to ~6 round tick values from 0 to xmax (1, 2 or 5 times a power of ten apart)."""
    raw = xmax / 5
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return np.arange(0, xmax + step * 1e-9, step)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tensorboard_summaries(res: dict, log_dir: str) -> bool:
    """Eval scalars for TensorBoard in LOG_DIR/eval: an event file written with our TFRecord framing and
    tensorboard's protos (tensorboard's own writer imports TensorFlow: 2 s and 0.5 GB). Returns False
    where tensorboard is not installed."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
    except ImportError:
        return False
    import socket

    now = time.time()
    # one tag per quantity across train and eval: the eval run (LOG_DIR/eval) uses training's tags, so
    # TensorBoard draws both on one chart; segment-level quantities are other quantities, other tags
    seg = "segment_map" in res
    tags = {k: (f"segments/{k}" if seg else k) for k in ("hit_at_one", "perr", "gap", "map", "loss")}
    tags["segment_map"] = "segments/kaggle_map"
    values = [summary_pb2.Summary.Value(tag=tags[k], simple_value=float(res[k])) for k in tags if k in res]
    events = [event_pb2.Event(wall_time=now, file_version="brain.Event:2"),
              event_pb2.Event(wall_time=now, step=int(res.get("step", 0)), summary=summary_pb2.Summary(value=values))]
    path = os.path.join(log_dir, "eval", f"events.out.tfevents.{now:.6f}.{socket.gethostname()}")
    with AtomicWriter(path) as f:
        for e in events:
            f.write(frame_record(e.SerializeToString()))
    return True

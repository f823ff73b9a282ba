"""Shared by the test files: plain reference implementations written from the definitions (the metric
kernels are checked against these), and the small model configurations the training and export tests
build."""
import numpy as np

from yt8m_engine.train.config import FRAME_MODELS, ModelConfig


def ref_ap(scores, labels, numpos=None, n=None):
    pairs = sorted(zip(scores, labels), key=lambda p: (-p[0], p[1] > 0))  # ties: negatives first
    if numpos is None:
        numpos = sum(1 for _, lab in pairs if lab > 0)
    if n is not None:
        pairs = pairs[:n]
        numpos = min(numpos, n)
    if numpos == 0:
        return 0.0
    hits, ap = 0, 0.0
    for i, (_, lab) in enumerate(pairs):
        if lab > 0:
            hits += 1
            ap += hits / (i + 1)
    return ap / numpos


def ref_topk(row, k):
    return sorted(range(len(row)), key=lambda c: (-row[c], c))[:k]


def ref_metrics(preds, labels, k):
    n, c = preds.shape
    pooled, per_class = [], {j: [] for j in range(c)}
    hits, perr, perr_rows = 0, 0.0, 0
    for i in range(n):
        top = ref_topk(preds[i], k)
        for j in top:
            pooled.append((preds[i, j], labels[i, j]))
            per_class[j].append((preds[i, j], labels[i, j]))
        hits += labels[i, ref_topk(preds[i], 1)[0]]
        nl = int(labels[i].sum())
        if nl:
            perr_rows += 1
            perr += sum(1 for j in ref_topk(preds[i], nl) if preds[i, j] > 0 and labels[i, j]) / nl
    gap = ref_ap([p for p, _ in pooled], [lab for _, lab in pooled], numpos=int(labels.sum()))
    aps = []
    for j in range(c):
        npos = int(labels[:, j].sum())
        if npos:
            aps.append(ref_ap([p for p, _ in per_class[j]], [lab for _, lab in per_class[j]], numpos=npos))
    return {"hit_at_one": hits / n, "perr": perr / perr_rows, "gap": gap, "map": float(np.mean(aps))}


def ref_segment_map(submission, ratings, k):
    """submission: {class: [segment ids in order]}; ratings: {(segment, class): 0/1}."""
    aps = []
    for c, segs in submission.items():
        npos = sum(1 for (s, cc), v in ratings.items() if cc == c and v == 1)
        if npos == 0:
            continue
        rated = [s for s in segs[:k] if (s, c) in ratings]
        kept = [ratings[(s, c)] for i, s in enumerate(rated) if s not in rated[:i]]  # a repeat counts once
        hits, ap = 0, 0.0
        for i, v in enumerate(kept):
            if v == 1:
                hits += 1
                ap += hits / (i + 1)
        aps.append(ap / min(npos, k))
    return float(np.mean(aps)) if aps else 0.0


SMALL = dict(dbof_cluster_size=64, dbof_hidden_size=32, lstm_cells=16, lstm_layers=2, netvlad_cluster_size=8,
             netvlad_hidden_size=32, nextvlad_cluster_size=8, nextvlad_hidden_size=32, iterations=10,
             batch_norm_momentum=0.9)


def small_config(model, **kw):
    frame = model in FRAME_MODELS
    names = ["rgb", "audio"] if frame else ["mean_rgb", "mean_audio"]
    return ModelConfig(model=model, frame_features=frame, feature_names=names, **{**SMALL, **kw})

"""GAP and mAP: yt8m-engine's Numba accumulator vs the starter code's algorithm.

The baseline is the starter's eval path written plainly here: per batch `top_k_by_class`
(argpartition per video, per-class Python lists), then heapq-based AveragePrecisionCalculators (one
global for GAP, one per class for mAP, top_n=None as eval.py uses them), and at the end the shuffled
stable sort of `ap_at_n`. Ours: `VideoMetrics` (also computes Hit@1 and PERR on the way).

Each side runs in its own process, on the same generated predictions (batches of 10 000 videos x 3862
classes, ~3 labels a video); we report videos/s, the ratio of rates, and peak RSS. By default both
sides see the same number of videos; --baseline-videos lets the (slow, memory-hungry) baseline run on
fewer, which flatters it: its rate falls as its heaps grow.
Usage: python benchmarks/bench_metrics.py [--videos 1000000] [--baseline-videos N]
"""
import argparse
import heapq
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time

import numpy as np

NUM_CLASSES = 3862
BATCH = 10000


def batches(videos, seed=0):
    rng = np.random.default_rng(seed)
    for a in range(0, videos, BATCH):
        n = min(BATCH, videos - a)
        preds = rng.random((n, NUM_CLASSES), dtype=np.float32)
        labels = np.zeros((n, NUM_CLASSES), np.float32)
        rows = np.repeat(np.arange(n), 3)
        cls = rng.integers(0, NUM_CLASSES, rows.size)
        labels[rows, cls] = 1
        preds[rows, cls] += 0.5  # a model with some skill
        r, c = np.nonzero(labels)  # the same labels as CSR, the form our reader produces
        off = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=n), out=off[1:])
        yield preds, labels, off, c


# -- the starter's algorithm ------------------------------------------------------------------
class StarterAP:
    def __init__(self, top_n=None):
        self._top_n = top_n
        self._total_positives = 0
        self._heap = []

    def accumulate(self, predictions, actuals, num_positives=None):
        if num_positives is not None:
            self._total_positives += num_positives
        else:
            self._total_positives += np.size(np.where(np.array(actuals) > 0))
        heap = self._heap
        for i in range(np.size(predictions)):
            if self._top_n is None or len(heap) < self._top_n:
                heapq.heappush(heap, (predictions[i], actuals[i]))
            elif predictions[i] > heap[0][0]:
                heapq.heappop(heap)
                heapq.heappush(heap, (predictions[i], actuals[i]))

    def peek_ap_at_n(self):
        if not self._heap:
            return 0
        predlists = np.array(list(zip(*self._heap)))
        return self.ap_at_n(predlists[0], predlists[1], total_num_positives=self._total_positives)

    @staticmethod
    def ap_at_n(predictions, actuals, total_num_positives=None):
        random.seed(0)
        idx = random.sample(range(len(predictions)), len(predictions))
        predictions = predictions[idx]
        actuals = actuals[idx]
        sortidx = sorted(range(len(predictions)), key=lambda k: predictions[k], reverse=True)
        numpos = total_num_positives
        if numpos == 0:
            return 0
        ap = 0.0
        poscount = 0.0
        for i in range(len(sortidx)):
            if actuals[sortidx[i]] > 0:
                poscount += 1
                ap += poscount / (i + 1) / numpos
        return ap


def top_k_by_class(predictions, labels, k=20):
    num_classes = predictions.shape[1]
    triplets = []
    for v in range(predictions.shape[0]):
        idx = np.argpartition(predictions[v], -k)[-k:]
        triplets.extend((i, predictions[v][i], labels[v][i]) for i in idx)
    out_p = [[] for _ in range(num_classes)]
    out_l = [[] for _ in range(num_classes)]
    for c, p, lab in triplets:
        out_p[c].append(p)
        out_l[c].append(lab)
    positives = [np.sum(labels[:, i]) for i in range(num_classes)]
    return out_p, out_l, positives


def run_baseline(videos):
    gap = StarterAP()
    per_class = [StarterAP() for _ in range(NUM_CLASSES)]
    t = 0.0
    for preds, labels, _, _ in batches(videos):
        t0 = time.perf_counter()
        sp, sl, npos = top_k_by_class(preds, labels)
        for c in range(NUM_CLASSES):
            per_class[c].accumulate(sp[c], sl[c], npos[c])
        gap.accumulate([x for lst in sp for x in lst], [x for lst in sl for x in lst], sum(npos))
        t += time.perf_counter() - t0
    t0 = time.perf_counter()
    g = gap.peek_ap_at_n()
    aps = [a.peek_ap_at_n() for a in per_class if a._total_positives > 0]
    t += time.perf_counter() - t0
    return {"gap": float(g), "map": float(np.mean(aps)), "seconds": t}


def run_ours(videos):
    from yt8m_engine.kernels.metrics import VideoMetrics

    warm = VideoMetrics(NUM_CLASSES)  # compile (once per machine: the kernels are cached on disk)
    warm.add_dense(*next(batches(10))[:2])
    warm.results()
    m = VideoMetrics(NUM_CLASSES, top_k=20)
    t = 0.0
    for preds, _, off, cls in batches(videos):
        t0 = time.perf_counter()
        m.add(preds, off, cls)
        t += time.perf_counter() - t0
    t0 = time.perf_counter()
    r = m.results()
    t += time.perf_counter() - t0
    return {"gap": r["gap"], "map": r["map"], "seconds": t}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--baseline-videos", type=int, default=None,
                    help="default: --videos (the fair comparison; the baseline needs ~5 min and ~7 GB at 1 M)")
    ap.add_argument("--side", choices=["ours", "baseline"])
    args = ap.parse_args()
    if args.side:
        res = (run_ours if args.side == "ours" else run_baseline)(args.videos)
        res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0

    def side(name, videos):
        out = subprocess.run([sys.executable, __file__, "--side", name, "--videos", str(videos)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    if args.baseline_videos is None:
        args.baseline_videos = args.videos
    check = min(args.baseline_videos, 20000)
    a, b = side("ours", check), side("baseline", check)
    print(f"# same {check} videos: GAP ours={a['gap']:.6f} starter={b['gap']:.6f}; "
          f"mAP ours={a['map']:.6f} starter={b['map']:.6f} (float32 ties: ours ranks tied negatives first, the starter shuffles)")
    ours = side("ours", args.videos)
    base = side("baseline", args.baseline_videos)
    r_o = args.videos / ours["seconds"]
    r_b = args.baseline_videos / base["seconds"]
    print(f"gap_map_videos_per_s ours={r_o:.0f} ({args.videos} videos) baseline={r_b:.0f} "
          f"({args.baseline_videos} videos) ratio={r_o / r_b:.0f}x ({machine})")
    print(f"gap_map_peak_rss ours={ours['max_rss_mb']:.0f} MB ({args.videos} videos) "
          f"baseline={base['max_rss_mb']:.0f} MB ({args.baseline_videos} videos) ({machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

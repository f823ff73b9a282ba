"""`yt8m-engine score` of a full all-classes submission vs the starter's segment_eval_inference.py.

Data: synthetic rated validate videos (3/frame/validate*), and a submission in the all-classes layout
that `infer --segment_labels` writes by default: every one of the 1000 segment classes on its own line
with --ids segment ids (`video:start`) in a random order: every segment of the validate videos, and unrated
ids of other videos (as test ids would be) where they are fewer than --ids (1000 x 100 000 ids is ~1.2 GB, the
size of a real full submission). Both sides start with their label cache already built (the common
case: one cache, many submissions).

Baseline: the starter's segment_eval_inference.py step for step on Python 3 (its `b'..'` id bug
fixed, no TensorFlow imported: that only flatters it): the label cache read from its text file
into a dict {(segment_id, class): score}, positives counted per class, the submission read line by
line (`split(",")`, `split(" ")`, a dict look-up per id), then per class its AveragePrecisionCalculator
(a heapq of (prediction, actual) tuples, then numpy sorting in ap_at_n) and the mean.
Ours: the `yt8m-engine score` command in a process of its own.

Each side runs in its own process (wall time of the whole process, peak RSS: proc.py); ours runs
--repeat times before the baseline and as many times after it, the median of its runs is reported.
Both sides must print the same MAP (to 1e-6). Prints: NAME ours=X baseline=Y ratio=Z (peak RSS, machine).
Usage: python benchmarks/bench_score.py [--videos 2000] [--ids 100000] [--repeat 1]
"""
import argparse
import heapq
import os
import platform
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_metrics import StarterAP  # noqa: E402  (the starter's AveragePrecisionCalculator)
from proc import timed  # noqa: E402


# -- the baseline: segment_eval_inference.py ------------------------------------------------------
def baseline(label_cache, submission, top_n):
    labels = {}
    with open(label_cache) as fobj:  # Labels.from_file
        for line in fobj:
            line = line.strip().strip("\n")
            seg_id, label, score = line.split(",")
            labels[(seg_id, int(label))] = float(score)
    positive_counter = {}
    for (_, label_id), v in labels.items():
        if v > 0:
            positive_counter[label_id] = positive_counter.get(label_id, 0) + 1
    cls_preds = {}  # read_segment_predictions
    with open(submission) as fobj:
        next(fobj)  # the header (the starter would choke on it: int("Class"))
        for line in fobj:
            label_id, pred_ids_val = line.split(",")
            pred_ids = pred_ids_val.strip("\n").split(" ")
            if top_n:
                pred_ids = pred_ids[:top_n]
            pred_ids = [p for p in pred_ids if (p, int(label_id)) in labels]
            cls_preds[int(label_id)] = pred_ids
    aps = []
    for label_id in sorted(cls_preds):  # MeanAveragePrecisionCalculator over the classes
        class_preds = cls_preds[label_id]
        seg_label = [labels[(p, label_id)] for p in class_preds]
        scored = [float(x) / len(class_preds) for x in range(len(class_preds), 0, -1)] if class_preds else []
        heap = []
        for p, a in zip(scored, seg_label):  # AveragePrecisionCalculator.accumulate (top_n None)
            heapq.heappush(heap, (p, a))
        num_pos = positive_counter.get(label_id, 0)
        if num_pos > 0:  # filter_empty_classes
            preds, acts = zip(*heap) if heap else ((), ())
            aps.append(StarterAP.ap_at_n(np.array(preds), np.array(acts), num_pos))
    print(f"MAP {np.mean(aps):.6f}")


# -- data -----------------------------------------------------------------------------------------
def make_data(tmp, videos, ids_per_class, seed=0):
    from yt8m_engine import format as fmt
    from yt8m_engine.io.reader import Reader
    from yt8m_engine.io.synth import synth, video_id
    from yt8m_engine.score import load_ratings

    synth(tmp, videos=videos, shards=4, seed=seed, test_videos=4)
    pattern = os.path.join(tmp, "3/frame/validate*.tfrecord")
    seg_ids = []
    for b in Reader(segments=True, copy_frames=False).read(pattern, batch_size=4096):
        for vid, n in zip(b.ids, b.num_frames):
            seg_ids.extend(f"{vid}:{s}".encode() for s in range(0, int(n), fmt.SEGMENT_SIZE))
    rng = np.random.default_rng(seed)
    if len(seg_ids) < ids_per_class:  # unrated ids of other videos fill the lines (as test ids would)
        n = ids_per_class - len(seg_ids)
        seg_ids.extend(f"{video_id('test', i // 60)}:{5 * (i % 60)}".encode() for i in range(n))
    seg_ids = np.array(seg_ids)
    ratings = load_ratings(pattern)[0]  # (our label cache)
    cache = os.path.join(tmp, "label_cache.csv")  # the starter's
    with open(cache, "w") as f:
        for a, b, c, s, lab in zip(ratings.id_off[:-1], ratings.id_off[1:], ratings.cls, ratings.start, ratings.label):
            f.write(f"{ratings.id_bytes[a:b].tobytes().decode()}:{s},{c},{float(lab)}\n")
    sub = os.path.join(tmp, "submission.csv")
    with open(sub, "wb") as f:
        f.write(b"Class,Segments\n")
        for c in fmt.segment_class_ids():
            pick = rng.permutation(seg_ids.size)[:ids_per_class]
            f.write(b"%d," % c + b" ".join(seg_ids[pick].tolist()) + b"\n")
    return pattern, cache, sub, seg_ids.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--ids", type=int, default=100000, help="segment ids per class line")
    ap.add_argument("--top-n", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--side", choices=["baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--submission", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "baseline":
        baseline(args.cache, args.submission, args.top_n)
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_score_")
    env = dict(os.environ, YT8M_ENGINE_CACHE=os.path.join(tmp, "cache"))
    try:
        pattern, cache, sub, nseg = make_data(tmp, args.videos, args.ids)
        size = os.path.getsize(sub)
        exe = os.path.join(os.path.dirname(sys.executable), "yt8m-engine")
        ours_cmd = [exe, "score", sub, "--eval_data_pattern", pattern, "--top_n", str(args.top_n), "--json"]
        base_cmd = [sys.executable, __file__, "--side", "baseline", "--cache", cache, "--submission", sub,
                    "--top-n", str(args.top_n)]
        timed(ours_cmd, env)  # builds our label cache (the starter's is written above), compiles kernels
        ours = [timed(ours_cmd, env) for _ in range(args.repeat)]
        base = timed(base_cmd)
        ours += [timed(ours_cmd, env) for _ in range(args.repeat)]
        import json

        m_ours = json.loads(ours[0][2])["map"]
        m_base = float(base[2].split()[-1])
        times = sorted(t for t, _, _ in ours)
        t_ours = times[(len(times) - 1) // 2]
        rss = max(r for _, r, _ in ours)
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        print(f"# {size / 1e6:.0f} MB submission, 1000 classes x {min(args.ids, nseg)} ids, {nseg} segments; "
              f"ours' runs: {', '.join(f'{t:.2f}' for t, _, _ in ours)} s")
        print(f"# MAP ours={m_ours:.6f} baseline={m_base:.6f}")
        if abs(m_ours - m_base) > 1e-6:
            print("# MAP DIFFERS")
            return 1
        print(f"score_seconds[all-classes] ours={t_ours:.2f} baseline={base[0]:.2f} ratio={base[0] / t_ours:.1f}x "
              f"(peak RSS ours={rss:.0f} MB baseline={base[1]:.0f} MB; {machine})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

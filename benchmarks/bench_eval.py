"""`yt8m-engine eval` of a train_dir vs the starter's eval.py, same checkpoint, same files.

Baseline: the starter's eval.py step for step on TensorFlow 2 (the original runs on TF 1 queues):
TensorFlow imported, the model built and its checkpoint restored (our Keras model: the same maths),
tf.data TFRecordDataset -> parse_single_sequence_example -> decode_raw -> float32 frames padded to
300 (video level) or, with --segment_labels, the readers.py segment path (the rated segments' 5
frames gathered per unique start time, dense labels = the ratings' scores, label weights = the rated
classes) -> batches of 1024 (eval.py's default) -> the model on all 3862 classes (times the label
weights for segments) -> EvaluationMetrics: Hit@1 and PERR in numpy, GAP and mAP with the starter's
heapq AveragePrecisionCalculators (bench_metrics.py has them), the cross-entropy loss in numpy. Video-level
models (LogisticModel, MoeModel) on the video-level files: eval.py's aggregated reader, parse_example over
a batch of records, features and dense labels (video level only: segment ratings come with frames).
The model is trained 30 steps first, at bench_train's sizes for DBoF (1024 clusters, 256 hidden) and the
LSTM (128 cells).
Ours: `yt8m-engine eval --train_dir ... --run_once` in a process of its own, on the ONNX files the
trainer wrote beside the checkpoint (so no TensorFlow in the eval process; a train_dir of an older
version is exported in a subprocess first: `--cold` times that path).
With --segment_labels ours scores every 5-frame segment (for the Kaggle MAP) where the starter scores
the rated ones only (ours' Hit@1 / GAP / mAP are over the rated ones, as the starter's). Synthetic videos
have rated segments that run past their last frame: the baseline pads those with zero bytes counted as
frames (the starter's gather_nd would fail there), ours scores the frames there are, so the two sides'
segment GAP differ (on the same prediction rows the starter's GAP equals ours to 1e-5).

Each side is timed as a whole process (wall time, peak RSS of it and its children: proc.py); ours runs
--repeat times before the baseline and as many after it, the median is reported.
Prints: eval_seconds[MODEL,MODE] ours=X baseline=Y ratio=Z (peak RSS ours / baseline, machine).
Usage: python benchmarks/bench_eval.py [--videos 2000] [--model FrameLevelLogisticModel|DbofModel|LstmModel|MoeModel|
LogisticModel] [--repeat 1]
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proc import timed  # noqa: E402
NUM_CLASSES = 3862
VIDEO_MODELS = ("LogisticModel", "MoeModel")


def baseline(train_dir, pattern, segment_labels, batch_size=1024, max_frames=300):
    import glob

    import tensorflow as tf

    from bench_metrics import StarterAP, top_k_by_class
    from yt8m_engine.train.trainer import KerasPredictor

    pred = KerasPredictor(train_dir)  # build_graph + saver.restore
    files = sorted(glob.glob(pattern))
    if not pred.info.frame_features:  # eval.py's video-level reader: parse_example over a batch of records
        spec = {"labels": tf.io.VarLenFeature(tf.int64), "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
                "mean_audio": tf.io.FixedLenFeature([128], tf.float32)}

        def parse_batch(recs):
            e = tf.io.parse_example(recs, spec)
            labels = tf.cast(tf.sparse.to_indicator(e["labels"], NUM_CLASSES), tf.float32)
            return (tf.concat([e["mean_rgb"], e["mean_audio"]], 1),), labels, tf.ones([NUM_CLASSES])

        ds = tf.data.TFRecordDataset(files).batch(batch_size).map(parse_batch).prefetch(2)
        predict = pred.predict_features
    else:
        ds, predict = None, None
    ctx = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    if segment_labels:
        ctx.update({"segment_labels": tf.io.VarLenFeature(tf.int64),
                    "segment_start_times": tf.io.VarLenFeature(tf.int64),
                    "segment_scores": tf.io.VarLenFeature(tf.float32)})
    seq = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string), "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(rec):
        c, s = tf.io.parse_single_sequence_example(rec, context_features=ctx, sequence_features=seq)
        frames = tf.cast(tf.concat([tf.io.decode_raw(s["rgb"], tf.uint8), tf.io.decode_raw(s["audio"], tf.uint8)], 1),
                         tf.float32)
        n = tf.minimum(tf.shape(frames)[0], max_frames)
        if not segment_labels:
            frames = tf.ensure_shape(tf.pad(frames[:max_frames], [[0, max_frames - n], [0, 0]]), [max_frames, 1152])
            labels = tf.scatter_nd(c["labels"].values[:, None], tf.ones_like(c["labels"].values, tf.float32),
                                   [NUM_CLASSES])
            return tf.data.Dataset.from_tensors((frames, n, tf.minimum(labels, 1.0), tf.ones([NUM_CLASSES])))
        uniq, idx = tf.unique(c["segment_start_times"].values, out_idx=tf.int64)
        rng = uniq[:, None] + tf.range(5, dtype=tf.int64)[None, :]
        # zero frames past the end (a rated segment may run past a synthetic video's last frame)
        segs = tf.gather_nd(tf.pad(frames, [[0, 5], [0, 0]]), rng[:, :, None])
        ns = tf.shape(segs)[0]
        ind = tf.stack([idx, c["segment_labels"].values], -1)
        labels = tf.scatter_nd(ind, c["segment_scores"].values, [tf.cast(ns, tf.int64), NUM_CLASSES])
        weights = tf.scatter_nd(ind, tf.ones_like(c["segment_scores"].values), [tf.cast(ns, tf.int64), NUM_CLASSES])
        return tf.data.Dataset.from_tensor_slices((segs, tf.fill([ns], 5), labels, weights))

    if ds is None:
        ds = tf.data.TFRecordDataset(files).flat_map(parse).batch(batch_size).prefetch(2)
        ds = ds.map(lambda fr, nf, lab, w: ((fr, nf), lab, w))
        predict = pred.predict_frames
    gap = StarterAP()
    per_class = [StarterAP() for _ in range(NUM_CLASSES)]
    hits = perr = loss = 0.0
    n = 0
    for inputs, labels, weights in ds:
        p = predict(*(x.numpy() for x in inputs)) * weights.numpy()
        lab = labels.numpy()
        n += p.shape[0]
        hits += float(np.sum(lab[np.arange(p.shape[0]), np.argmax(p, 1)] > 0))  # calculate_hit_at_one
        for i in range(p.shape[0]):  # calculate_precision_at_equal_recall_rate
            k = int(np.sum(lab[i] > 0))
            if k:
                top = np.argpartition(p[i], -k)[-k:]
                perr += float(np.sum(lab[i][top] > 0)) / k
        loss += float(np.sum(-(lab * np.log(p + 1e-5) + (1 - lab) * np.log(1 - p + 1e-5))))
        sp, sl, npos = top_k_by_class(p, lab, 20)
        for c in range(NUM_CLASSES):
            per_class[c].accumulate(sp[c], sl[c], npos[c])
        gap.accumulate([x for lst in sp for x in lst], [x for lst in sl for x in lst], sum(npos))
    aps = [a.peek_ap_at_n() for a in per_class if a._total_positives > 0]
    print(json.dumps({"examples": n, "hit_at_one": hits / n, "perr": perr / n, "gap": float(gap.peek_ap_at_n()),
                      "map": float(np.mean(aps)), "loss": loss / n}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--model", default="FrameLevelLogisticModel")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", default="video,segment")
    ap.add_argument("--cold", action="store_true", help="remove the trainer's exports before each of our runs")
    ap.add_argument("--side", choices=["baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--train-dir", help=argparse.SUPPRESS)
    ap.add_argument("--pattern", help=argparse.SUPPRESS)
    ap.add_argument("--segment-labels", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "baseline":
        baseline(args.train_dir, args.pattern, args.segment_labels)
        return 0
    from yt8m_engine.io.synth import synth
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    try:
        synth(tmp, videos=args.videos, shards=4, seed=0, test_videos=4)
        train_dir = os.path.join(tmp, "model")
        # (bench_train's sizes: the starter's 8192-cluster DBoF and 1024-cell LSTM at a fraction of the time)
        kw = {"DbofModel": dict(dbof_cluster_size=1024, dbof_hidden_size=256),
              "LstmModel": dict(lstm_cells=128)}.get(args.model, {})
        video = args.model in VIDEO_MODELS
        if video:
            kw.update(frame_features=False, feature_names=["mean_rgb", "mean_audio"])
        level = "video" if video else "frame"
        train(ModelConfig(model=args.model, **kw),
              TrainConfig(train_data_pattern=os.path.join(tmp, f"2/{level}/train*"), train_dir=train_dir, batch_size=64,
                          max_steps=30, log_every=1000), echo=lambda s: None)
        exe = os.path.join(os.path.dirname(sys.executable), "yt8m-engine")
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        for mode in args.modes.split(","):
            seg = mode == "segment"
            if seg and video:  # (segment ratings come with frame-level data only)
                continue
            pattern = os.path.join(tmp, "3/frame/validate*" if seg else f"2/{level}/validate*")
            ours_cmd = [exe, "eval", "--train_dir", train_dir, "--eval_data_pattern", pattern, "--run_once", "--json"]
            ours_cmd += ["--segment_labels"] if seg else []
            base_cmd = [sys.executable, __file__, "--side", "baseline", "--train-dir", train_dir, "--pattern", pattern]
            base_cmd += ["--segment-labels"] if seg else []

            def ours():
                if args.cold:
                    shutil.rmtree(os.path.join(train_dir, "export"), ignore_errors=True)
                return timed(ours_cmd)

            ours()  # warm-up: compiled kernels, page cache
            runs = [ours() for _ in range(args.repeat)]
            base = timed(base_cmd)
            runs += [ours() for _ in range(args.repeat)]
            o = json.loads(runs[0][2])
            b = json.loads(base[2])
            times = sorted(t for t, _, _ in runs)
            t_ours = times[(len(times) - 1) // 2]
            rss = max(r for _, r, _ in runs)
            print(f"# {mode}: ours' runs {', '.join(f'{t:.2f}' for t, _, _ in runs)} s; ours {o['videos']} videos"
                  f"{', ' + str(o['segments']) + ' segments' if seg else ''}, baseline {b['examples']} examples")
            if seg:
                print(f"# rated segments: ours {o['rated_segments']}, hit@1 {o['hit_at_one']:.4f} gap {o['gap']:.4f}, "
                      f"baseline hit@1 {b['hit_at_one']:.4f} gap {b['gap']:.4f}; ours Kaggle MAP {o['segment_map']:.4f}")
            else:
                print(f"# ours gap {o['gap']:.6f} hit@1 {o['hit_at_one']:.4f}; baseline gap {b['gap']:.6f} "
                      f"hit@1 {b['hit_at_one']:.4f}")
            print(f"eval_seconds[{args.model},{mode}] ours={t_ours:.2f} baseline={base[0]:.2f} "
                  f"ratio={base[0] / t_ours:.1f}x (peak RSS ours={rss:.0f} MB baseline={base[1]:.0f} MB; {machine})",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

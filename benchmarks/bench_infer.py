"""Segment inference end to end: `yt8m-engine infer` vs the starter's inference.py, same files, same model.

Baseline: the starter's `inference.py --segment_labels` step for step, on TensorFlow 2 (the original
runs on TF 1 queues only): tf.data TFRecordDataset -> parse_single_sequence_example -> decode_raw ->
float32 -> every video padded to 300 frames (the reader's resize_axis) -> batches of videos -> the
starter's get_segments (numpy masks over the padded batch) -> "id:start" strings -> the TensorFlow
(Keras) model on all 3862 classes -> predictions times the whitelist mask of the 1000 segment classes
-> format_lines (argpartition top-k, sorted, "%i %g") into a temporary CSV -> re-read, a Python heapq
per class (size --segment_max_pred) -> "Class,Segments" CSV. The dequantization's multiply-add runs
inside our Keras model instead of the reader (the same arithmetic). The batch is 256 videos, not the
starter's 8192 (8192 x 300 x 1152 floats would need 11 GB): measured on a 2-core VM, batches of 128
and 256 videos are the baseline's fastest (4.2-4.5 k segments/s; 64: 3.0 k, 1024: 2.7 k).

Ours: `infer` with ONNX Runtime (CPU here), in a process of its own without TensorFlow (as the CLI
runs; TensorFlow's idle thread pools in the same process slowed it by ~15%), in the starter's top-k
mode (the same work; the two CSVs must agree) and in the default all-classes mode (more work: every
segment competes in every class, and the CSV holds 1000 x segments ids).
Ours runs --repeat times per mode before the baseline and as many times after it (the machine's speed
drifts within minutes; ours takes seconds, the baseline a minute); the median of those runs is reported
(the lower middle one), with every run's figure on a comment line.
Prints one line per comparison: NAME ours=X baseline=Y ratio=Z (machine).
Usage: python benchmarks/bench_infer.py [--videos 16000] [--shards 8] [--model FrameLevelLogisticModel]
"""
import argparse
import heapq
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def starter_segments(video, num_frames, size=5):
    """The starter's get_segments: 5-frame segments at 0, 5, ... below num_frames out of a batch of
    videos padded to the same length (the last partial segment keeps its padding rows)."""
    nb, tmax, d = video.shape
    padded_len = (num_frames + size - 1) // size * size
    keep = np.arange(tmax)[None, :] < padded_len[:, None]
    frames = video.reshape(-1, d)[keep.reshape(-1)].reshape(-1, size, d)
    starts = np.arange(0, tmax, size)
    left = (num_frames[:, None] - starts[None, :]).reshape(-1)
    valid = left > 0
    seg_nf = np.minimum(left[valid], size)
    seg_video = np.repeat(np.arange(nb), len(starts))[valid]
    seg_start = np.tile(starts, nb)[valid]
    return frames, seg_nf, seg_video, seg_start


def load_baseline_model(train_dir):
    """The Keras model, loaded and traced before the clock starts (our side gets a warm-up run too)."""
    from yt8m_engine.train.trainer import KerasPredictor

    pred = KerasPredictor(train_dir)
    for n in (7, 300, 4000):  # a few batch sizes: later sizes reuse the relaxed trace
        pred.predict_frames(np.zeros((n, 5, 1152), np.float32), np.full(n, 5, np.int32))
    return pred


def baseline(pred, files, out_csv, top_k, max_pred, batch_size=256, max_frames=300):
    """The starter's inference.py --segment_labels (see the module docstring). Returns segments."""
    import tensorflow as tf

    from yt8m_engine import format as fmt

    mask = np.zeros(fmt.NUM_CLASSES, np.float32)
    mask[np.asarray(fmt.segment_class_ids())] = 1.0
    ctx = {"id": tf.io.FixedLenFeature([], tf.string)}
    seq = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string), "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(rec):
        c, s = tf.io.parse_single_sequence_example(rec, context_features=ctx, sequence_features=seq)
        frames = tf.concat([tf.io.decode_raw(s["rgb"], tf.uint8), tf.io.decode_raw(s["audio"], tf.uint8)], 1)
        frames = tf.cast(frames, tf.float32)  # the starter's reader: float32 from here on
        n = tf.minimum(tf.shape(frames)[0], max_frames)
        frames = tf.ensure_shape(tf.pad(frames[:max_frames], [[0, max_frames - n], [0, 0]]), [max_frames, 1152])
        return c["id"], frames, n

    ds = tf.data.TFRecordDataset(files).map(parse).batch(batch_size).prefetch(2)
    n_seg = 0
    with tempfile.TemporaryFile() as tmp:
        tmp.write(b"VideoId,LabelConfidencePairs\n")
        for vid, video, nf in ds:
            vid, video, nf = vid.numpy(), video.numpy(), nf.numpy()
            frames, seg_nf, seg_video, seg_start = starter_segments(video, nf)
            sids = ["%s:%d" % (vid[v].decode("utf8"), s) for v, s in zip(seg_video, seg_start)]
            p = pred.predict_frames(frames, seg_nf)
            n_seg += len(sids)
            for i, sid in enumerate(sids):  # format_lines
                row = p[i] * mask
                top = np.argpartition(row, -top_k)[-top_k:]
                line = sorted(((int(c), row[c]) for c in top), key=lambda t: -t[1])
                tmp.write((sid + "," + " ".join("%i %g" % (c, s) for c, s in line) + "\n").encode("utf8"))
        heaps = {}
        tmp.seek(0)
        for raw in tmp:  # the post-processing pass
            sid, preds = raw.decode("utf8").split(",")
            if sid == "VideoId":
                continue
            preds = preds.split(" ")
            for c, s in zip(preds[0::2], preds[1::2]):
                h = heaps.setdefault(int(c), [])
                if len(h) >= max_pred:
                    heapq.heappushpop(h, (float(s), sid))
                else:
                    heapq.heappush(h, (float(s), sid))
    with open(out_csv, "w") as f:
        f.write("Class,Segments\n")
        for c in sorted(heaps):
            h = heaps[c]
            h.sort(key=lambda x: x[0], reverse=True)
            f.write("%d,%s\n" % (c, " ".join(x[1] for x in h)))
    return n_seg


def class_sets(path):
    with open(path) as f:
        next(f)
        return {int(c): set(s.split()) for c, s in (ln.rstrip("\n").split(",", 1) for ln in f)}


def agreement(a_csv, b_csv):
    """(segment, class) pairs in both submissions / pairs in either (order is not compared: the
    baseline's scores are rounded to 6 digits by "%g", so its ties differ)."""
    a, b = class_sets(a_csv), class_sets(b_csv)
    both = sum(len(a.get(c, set()) & b.get(c, set())) for c in set(a) | set(b))
    either = sum(len(a.get(c, set()) | b.get(c, set())) for c in set(a) | set(b))
    return both / max(either, 1)


def run_ours(onnx_path, pattern, out_dir, top_k, max_pred, repeat):
    """Our side, in a process of its own (no TensorFlow loaded, as `yt8m-engine infer` runs): a warm-up
    run per mode (compiled kernels, page cache), then `repeat` runs per mode; every run's stats, per mode."""
    from yt8m_engine.infer import infer

    kw = dict(segment_labels=True, progress=False, top_k=top_k, segment_max_pred=max_pred)
    for mode in ("topk", "all"):  # warm-up: each mode's kernels compiled (or loaded from the cache)
        infer(onnx_path, pattern, None, segment_mode=mode, **kw)
    return {mode: [infer(onnx_path, pattern, os.path.join(out_dir, f"ours_{mode}.csv"), segment_mode=mode,
                         **kw).to_dict() for _ in range(repeat)]
            for mode in ("topk", "all")}


def median_run(runs):
    """The median run (of an even number, the lower of the middle two)."""
    return sorted(runs, key=lambda st: st["segments_per_sec"])[(len(runs) - 1) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--model", default="FrameLevelLogisticModel")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--segment-max-pred", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours per mode, before and again after the "
                    "baseline (the median of all is reported)")
    ap.add_argument("--ours", nargs=2, metavar=("MODEL", "PATTERN"), help=argparse.SUPPRESS)  # the child
    args = ap.parse_args()
    if args.ours:
        print(json.dumps(run_ours(*args.ours, os.path.dirname(args.ours[0]), args.top_k, args.segment_max_pred,
                                  args.repeat)))
        return 0
    from yt8m_engine.export.onnx_export import export
    from yt8m_engine.io.files import resolve_files
    from yt8m_engine.io.synth import synth
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    tmp = tempfile.mkdtemp(prefix="bench_infer_")
    try:
        synth(tmp, videos=args.shards, shards=args.shards, seed=0, test_videos=args.videos)
        pattern = os.path.join(tmp, "3/frame/test*.tfrecord")
        files = resolve_files(pattern)
        small = dict(dbof_cluster_size=2048, dbof_hidden_size=512) if args.model == "DbofModel" else {}
        train_dir = os.path.join(tmp, "model")
        train(ModelConfig(model=args.model, **small),
              TrainConfig(train_data_pattern=os.path.join(tmp, "2/frame/train*"), train_dir=train_dir, batch_size=4,
                          max_steps=2), echo=lambda s: None)
        onnx_path = os.path.join(tmp, "model.onnx")
        export(train_dir, onnx_path, classes="segment")
        def ours():
            child = subprocess.run([sys.executable, __file__, "--ours", onnx_path, pattern, "--repeat",
                                    str(args.repeat), "--top-k", str(args.top_k), "--segment-max-pred",
                                    str(args.segment_max_pred)], capture_output=True, text=True, check=True)
            return json.loads(child.stdout.strip().splitlines()[-1])

        # ours before and after the baseline, the median of all those runs: the machine's speed drifts
        # within minutes, and ours takes seconds where the baseline takes a minute
        before = ours()
        pred = load_baseline_model(train_dir)
        t = time.perf_counter()
        n_base = baseline(pred, files, os.path.join(tmp, "base.csv"), args.top_k, args.segment_max_pred)
        t_base = time.perf_counter() - t
        after = ours()
        results = {mode: median_run(before[mode] + after[mode]) for mode in before}
        spread = {mode: [round(r["segments_per_sec"]) for r in before[mode] + after[mode]] for mode in before}
        agree = agreement(os.path.join(tmp, "ours_topk.csv"), os.path.join(tmp, "base.csv"))
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {results['all']['provider']}"
        print(f"# {args.model}, {n_base} segments of {args.videos} videos in {len(files)} files, top_k={args.top_k}, "
              f"segment_max_pred={args.segment_max_pred}; baseline {t_base:.1f} s")
        print(f"# top-k mode vs baseline: {agree:.4f} of the (segment, class) pairs agree")
        print(f"# ours, segments/s of each run ({args.repeat} before the baseline, {args.repeat} after): {spread}")
        for mode, st in results.items():
            assert st["segments"] == n_base, (st["segments"], n_base)
            ours = st["segments_per_sec"]
            base = n_base / t_base
            print(f"infer_segments_per_s[{args.model},{mode}] ours={ours:.0f} baseline={base:.0f} "
                  f"ratio={ours / base:.1f}x ({machine})")
            print(f"#   stages (busy s, summed over threads): {st['stage_seconds']}, wall {st['seconds']:.2f} s")
        if agree < 0.99:
            print("# WARNING: the two submissions disagree; the comparison is not like for like")
            return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Segment inference end to end: `yt8m-engine infer` vs a starter-style pipeline, same files, same model.

Baseline (the way the starter's inference.py works, on TF 2): tf.data TFRecordDataset ->
parse_single_sequence_example -> decode_raw -> 5-frame segments -> the TensorFlow (Keras) model ->
whitelist of the 1000 segment classes -> each segment's top-k classes pushed into a Python heapq per
class (size --segment_max_pred) -> CSV. Ours: `infer` with ONNX Runtime (CPU here), in the starter's
top-k mode (the same work) and in the default all-classes mode (more work: every segment competes in
every class). Prints one line per comparison: NAME ours=X baseline=Y ratio=Z (machine).
Usage: python benchmarks/bench_infer.py [--videos 1500] [--model FrameLevelLogisticModel]
"""
import argparse
import heapq
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def baseline(train_dir, files, out_csv, top_k, max_pred, batch_size=1024):
    import tensorflow as tf

    from yt8m_engine import format as fmt
    from yt8m_engine.train.trainer import KerasPredictor

    pred = KerasPredictor(train_dir)
    seg_ids = np.asarray(fmt.segment_class_ids())
    ctx = {"id": tf.io.FixedLenFeature([], tf.string)}
    seq = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string), "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(rec):
        c, s = tf.io.parse_single_sequence_example(rec, context_features=ctx, sequence_features=seq)
        frames = tf.concat([tf.io.decode_raw(s["rgb"], tf.uint8), tf.io.decode_raw(s["audio"], tf.uint8)], 1)
        n = tf.shape(frames)[0]
        nseg = (n + 4) // 5
        frames = tf.pad(frames, [[0, nseg * 5 - n], [0, 0]])
        segs = tf.reshape(frames, [nseg, 5, 1152])
        starts = tf.range(nseg) * 5
        return tf.data.Dataset.from_tensor_slices((tf.fill([nseg], c["id"]), starts, segs,
                                                   tf.minimum(n - starts, 5)))

    ds = tf.data.TFRecordDataset(files).flat_map(parse).batch(batch_size).prefetch(2)
    heaps = {int(c): [] for c in seg_ids}
    n_seg = 0
    for ids, starts, segs, nf in ds:
        p = pred.predict_frames(segs.numpy(), nf.numpy())[:, seg_ids]
        ids = ids.numpy()
        starts = starts.numpy()
        n_seg += len(ids)
        for i in range(len(ids)):
            top = np.argpartition(p[i], -top_k)[-top_k:]
            sid = f"{ids[i].decode()}:{starts[i]}"
            for j in top:
                h = heaps[int(seg_ids[j])]
                item = (float(p[i, j]), sid)
                if len(h) < max_pred:
                    heapq.heappush(h, item)
                elif item > h[0]:
                    heapq.heapreplace(h, item)
    with open(out_csv, "w") as f:
        f.write("Class,Segments\n")
        for c in sorted(heaps):
            f.write(f"{c}," + " ".join(s for _, s in sorted(heaps[c], reverse=True)) + "\n")
    return n_seg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1500)
    ap.add_argument("--model", default="FrameLevelLogisticModel")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--segment-max-pred", type=int, default=100000)
    args = ap.parse_args()
    from yt8m_engine.export.onnx_export import export
    from yt8m_engine.infer import infer
    from yt8m_engine.io.reader import resolve_files
    from yt8m_engine.io.synth import synth
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    tmp = tempfile.mkdtemp(prefix="bench_infer_")
    synth(tmp, videos=64, shards=2, seed=0, test_videos=args.videos)
    files = resolve_files(os.path.join(tmp, "3/frame/test*.tfrecord"))
    small = dict(dbof_cluster_size=2048, dbof_hidden_size=512) if args.model == "DbofModel" else {}
    train_dir = os.path.join(tmp, "model")
    train(ModelConfig(model=args.model, **small),
          TrainConfig(train_data_pattern=os.path.join(tmp, "2/frame/train*"), train_dir=train_dir, batch_size=16,
                      max_steps=2), echo=lambda s: None)
    onnx_path = os.path.join(tmp, "model.onnx")
    export(train_dir, onnx_path, classes="segment")
    pattern = os.path.join(tmp, "3/frame/test*.tfrecord")
    infer(onnx_path, pattern, None, segment_labels=True, progress=False)  # compile / warm caches

    t = time.perf_counter()
    n_base = baseline(train_dir, files, os.path.join(tmp, "base.csv"), args.top_k, args.segment_max_pred)
    t_base = time.perf_counter() - t
    results = {}
    for mode in ("topk", "all"):
        st = infer(onnx_path, pattern, os.path.join(tmp, f"ours_{mode}.csv"), segment_labels=True, progress=False,
                   segment_mode=mode, top_k=args.top_k, segment_max_pred=args.segment_max_pred)
        assert st.segments == n_base
        results[mode] = st
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {results['all'].provider}"
    print(f"# {args.model}, {n_base} segments of {args.videos} videos, top_k={args.top_k}, "
          f"segment_max_pred={args.segment_max_pred}")
    for mode, st in results.items():
        ours = st.segments / st.wall
        base = n_base / t_base
        print(f"infer_segments_per_s[{args.model},{mode}] ours={ours:.0f} baseline={base:.0f} "
              f"ratio={ours / base:.1f}x ({machine})")
        print(f"#   stages (busy s): {st.to_dict()['stage_seconds']}, wall {st.wall:.2f} s")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reader throughput: yt8m-engine's TF-free Numba reader vs tf.data + tf.io.parse_sequence_example.

Both sides read the same synthetic frame-level shards from the page cache, parse every record and
produce dequantized float32 frames (ours: videos back to back [total_frames, 1152], the layout the
engine uses; the baseline pads each batch to its longest video) (the baseline: TFRecordDataset -> batch -> parse_sequence_example
-> decode_raw -> the starter's Dequantize, as the starter's readers do). One core each
(NUMBA_NUM_THREADS=1, TF intra/inter-op threads = 1). Prints one line per comparison:
    NAME ours=X baseline=Y ratio=Z (machine)
Usage: python benchmarks/bench_reader.py [--videos 1500] [--repeat 3]
"""
import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def ours(files, dequant: bool):
    from yt8m_engine.io.reader import Reader
    from yt8m_engine.kernels.dequant import dequantize

    reader = Reader()
    n = 0
    out = np.empty(0, np.float32)  # reused float32 buffer, as a consumer would keep one
    for path in files:
        for b in reader.read_file(path, batch_size=256):
            n += len(b)
            if dequant:
                if out.size < b.frames.size:
                    out = np.empty(b.frames.size * 2, np.float32)
                dequantize(b.frames, out[:b.frames.size].reshape(b.frames.shape))
    return n


def baseline(files):
    import tensorflow as tf

    ctx = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    seq = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string), "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(records):
        c, s, _ = tf.io.parse_sequence_example(records, context_features=ctx, sequence_features=seq)
        rgb = tf.cast(tf.io.decode_raw(s["rgb"], tf.uint8, fixed_length=1024), tf.float32) * (4 / 255) + (4 / 512 - 2)
        audio = tf.cast(tf.io.decode_raw(s["audio"], tf.uint8, fixed_length=128), tf.float32) * (4 / 255) + (4 / 512 - 2)
        return c["id"], tf.concat([rgb, audio], -1)

    ds = tf.data.TFRecordDataset(files).batch(256).map(parse)
    n = 0
    for ids, _ in ds:
        n += int(ids.shape[0])
    return n


def timed(fn, repeat):
    best = float("inf")
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t)
    return n, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=None, help="existing frame-level files (glob); default: synthesize")
    args = ap.parse_args()
    from yt8m_engine.io.files import resolve_files
    from yt8m_engine.io.synth import synth

    tmp = None
    if args.data:
        files = resolve_files(args.data)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_reader_")
        synth(tmp, videos=args.videos, shards=4, seed=0, test_videos=4)
        files = resolve_files(os.path.join(tmp, "2/frame/train*.tfrecord"))
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ours(files[:1], True)  # compile / warm the page cache
    baseline(files[:1])
    n_b, t_b = timed(lambda: baseline(files), args.repeat)
    n_u, t_u = timed(lambda: ours(files, False), args.repeat)
    n_d, t_d = timed(lambda: ours(files, True), args.repeat)
    assert n_b == n_u == n_d, (n_b, n_u, n_d)
    print(f"# {n_b} records, {mb:.1f} MB in {len(files)} files; one core each")
    for name, t in (("reader_uint8", t_u), ("reader_dequantized", t_d)):
        print(f"{name} ours={n_b / t:.0f} rec/s ({mb / t:.0f} MB/s) baseline={n_b / t_b:.0f} rec/s "
              f"({mb / t_b:.0f} MB/s) ratio={t_b / t:.1f}x ({machine()})")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

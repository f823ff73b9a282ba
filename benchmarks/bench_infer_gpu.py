"""GPU inference end to end, without TensorFlow (for a GPU host that has only ONNX Runtime).

Makes its own synthetic test shards, then runs `infer --segment_labels` with exported ONNX files
(exported elsewhere: `yt8m-engine export ... --classes segment [--fp16] [--frames 5]`) and prints,
for each model and segment mode (the starter's top-k, all classes), segments/s end to end with io binding
(ours) against plain `session.run()` on host arrays (baseline) in the same run, plus the stage times.
    NAME ours=X baseline=Y ratio=Z (machine)
Usage: python benchmarks/bench_infer_gpu.py MODEL.onnx [MODEL.onnx ...] [--videos 20000] [--providers cuda]
       [--modes topk,all]
"""
import argparse
import os
import platform
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--providers", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--data", default=None, help="existing frame-level test files (default: synthesize)")
    ap.add_argument("--modes", default="topk,all", help="segment modes to time: the starter's top-k (the host ranks "
                    "20 classes a segment) and all classes (1000 a segment: the host's heaviest ranking)")
    args = ap.parse_args()
    from yt8m_engine.infer import infer
    from yt8m_engine.io.synth import synth

    pattern = args.data
    if pattern is None:
        tmp = tempfile.mkdtemp(prefix="bench_gpu_")
        synth(tmp, videos=args.shards, shards=args.shards, seed=0, test_videos=args.videos)
        pattern = os.path.join(tmp, "3/frame/test*.tfrecord")
    for model in args.models:
        kw = dict(segment_labels=True, progress=False, providers=args.providers, threads=args.threads,
                  batch_size=args.batch_size)
        for mode in args.modes.split(","):  # warm-up: compile each mode's kernels, load CUDA, page cache
            infer(model, pattern, None, segment_mode=mode, **kw)
        for mode in args.modes.split(","):
            ours = infer(model, pattern, None, io_binding=None, segment_mode=mode, **kw)
            base = infer(model, pattern, None, io_binding=False, segment_mode=mode, **kw)
            machine = f"{platform.machine()}, {os.cpu_count()} cores, {ours.provider}"
            r_o, r_b = ours.segments / ours.wall, base.segments / base.wall
            print(f"infer_gpu_segments_per_s[{os.path.basename(model)},{mode}] ours={r_o:.0f} baseline={r_b:.0f} "
                  f"ratio={r_o / r_b:.2f}x ({machine}; baseline: plain run() on host arrays)", flush=True)
            print(f"#   {ours.segments} segments, {ours.bytes / 1e6:.0f} MB, wall {ours.wall:.2f} s; stages (busy s): "
                  f"{ours.to_dict()['stage_seconds']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

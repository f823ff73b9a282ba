"""Training throughput (examples/s) of every built-in model on this machine (CPU here).

Each model trains on the same synthetic frame- or video-level shards through `yt8m-engine train`'s
loop (tf.data input, GradientTape, Adam, clipping); the first steps (graph tracing) are excluded.
There is no baseline to divide by: the starter code's train.py does not run on TF 2 (TF1 queues,
tf.contrib). Prints: train_examples_per_s[MODEL] ours=X (machine, sizes).
Usage: python benchmarks/bench_train.py [--steps 20] [--batch-size 64] [--default-sizes]
"""
import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SMALL = dict(dbof_cluster_size=2048, dbof_hidden_size=512, lstm_cells=256, lstm_layers=1, netvlad_cluster_size=16,
             netvlad_hidden_size=512, nextvlad_cluster_size=16, nextvlad_hidden_size=512)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--default-sizes", action="store_true", help="the models' full default sizes (slow on a CPU)")
    args = ap.parse_args()
    from yt8m_engine.io.synth import synth
    from yt8m_engine.train.config import FRAME_MODELS, MODELS, ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    tmp = tempfile.mkdtemp(prefix="bench_train_")
    synth(tmp, videos=600, shards=4, seed=0, test_videos=4)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, CPU"
    for model in MODELS:
        frame = model in FRAME_MODELS
        cfg = ModelConfig(model=model, frame_features=frame,
                          feature_names=["rgb", "audio"] if frame else ["mean_rgb", "mean_audio"],
                          **({} if args.default_sizes else SMALL))
        times = []
        tcfg = TrainConfig(train_data_pattern=os.path.join(tmp, f"2/{'frame' if frame else 'video'}/train*"),
                           train_dir=os.path.join(tmp, model), batch_size=args.batch_size,
                           max_steps=args.steps + 3, num_epochs=100, log_every=1, export_model_steps=0)
        train(cfg, tcfg, start_new_model=True, echo=lambda s: times.append(time.perf_counter()) if s.startswith("step") else None)
        # times[k] is when step k+1 was logged: skip the first 3 steps (tracing)
        dt = times[-1] - times[2]
        eps = (len(times) - 3) * args.batch_size / dt
        sizes = "default sizes" if args.default_sizes else "reduced sizes"
        print(f"train_examples_per_s[{model}] ours={eps:.0f} ({machine}, batch {args.batch_size}, {sizes})")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`yt8m-engine demo`: the main job end to end on built-in synthetic data.

synth -> inspect -> train -> eval -> export -> infer -> score, with an untrained model (the step-0
checkpoint) scored the same way as the reference a trained model must beat.
"""
from __future__ import annotations

import os
import time

from .io.inspect import inspect
from .io.synth import synth


def run_demo(out_dir: str, videos: int = 600, seed: int = 0, epochs: int = 12, echo=print) -> dict:
    from .evaluate import evaluate, write_reports
    from .export.onnx_export import export
    from .infer import infer
    from .score import score
    from .train.config import ModelConfig, TrainConfig
    from .train.trainer import train

    data = os.path.join(out_dir, "data")
    train_dir = os.path.join(out_dir, "model")
    t0 = time.perf_counter()
    results: dict = {}

    def step(i, text):
        echo(f"[{i}/7] {text}  ({time.perf_counter() - t0:.0f} s)")

    step(1, f"synth: {videos} videos per split -> {data}")
    res = synth(data, videos=videos, shards=4, seed=seed)
    echo(f"      {res['files']} files, {res['bytes'] / 1e6:.1f} MB")

    step(2, "inspect: read and check every record without TensorFlow")
    for pattern in ("2/frame/train*.tfrecord", "3/frame/validate*.tfrecord"):
        t = inspect(os.path.join(data, pattern)).totals()
        echo(f"      {pattern:<28} {t['records']:>6} records, frames {t['frames']['min']}-{t['frames']['max']}, "
             f"{t['labels_per_video']:.2f} labels/video, {t['rated_segments']} rated segments "
             f"({t['positive_segments']} positive), {t['corrupt']} corrupt")

    step(3, "train: FrameLevelLogisticModel (Keras 3, TensorFlow)")
    mcfg = ModelConfig(model="FrameLevelLogisticModel")
    tcfg = TrainConfig(train_data_pattern=os.path.join(data, "2/frame/train*.tfrecord"), train_dir=train_dir,
                       batch_size=64, num_epochs=epochs, base_learning_rate=0.05, log_every=25,
                       export_model_steps=100, seed=seed)
    tr = train(mcfg, tcfg, start_new_model=True, echo=lambda s: echo("      " + s))

    step(4, "eval: video-level metrics on 2/frame/validate, trained vs untrained")
    val = os.path.join(data, "2/frame/validate*.tfrecord")
    trained = evaluate(train_dir, val)
    write_reports(trained, os.path.join(train_dir, "eval"))
    untrained = evaluate(train_dir, val, checkpoint=os.path.join(train_dir, "checkpoints", "ckpt-0"))
    results["eval"] = {"trained": {k: trained[k] for k in ("hit_at_one", "perr", "gap", "map")},
                       "untrained": {k: untrained[k] for k in ("hit_at_one", "perr", "gap", "map")}}

    step(5, "export: ONNX (uint8 input, in-graph dequantization, the 1000 segment classes)")
    onnx_path = os.path.join(out_dir, "model.onnx")
    export(train_dir, onnx_path, classes="segment")
    untrained_path = os.path.join(out_dir, "untrained.onnx")
    export(train_dir, untrained_path, classes="segment", checkpoint=os.path.join(train_dir, "checkpoints", "ckpt-0"))

    step(6, "infer: segment-level submissions with ONNX Runtime")
    rated = os.path.join(data, "3/frame/validate*.tfrecord")
    sub = os.path.join(out_dir, "validate_submission.csv")
    st = infer(onnx_path, rated, sub, segment_labels=True, progress=False)
    echo(f"      {st.videos} videos, {st.segments} segments, {st.segments / st.wall:.0f} segments/s ({st.provider})")
    infer(onnx_path, os.path.join(data, "3/frame/test*.tfrecord"), os.path.join(out_dir, "test_submission.csv"),
          segment_labels=True, progress=False)
    sub_untrained = os.path.join(out_dir, "validate_submission_untrained.csv")
    infer(untrained_path, rated, sub_untrained, segment_labels=True, progress=False)

    step(7, "score: Kaggle 2019 MAP@100000 against the rated segments")
    s_tr = score(sub, rated)
    s_un = score(sub_untrained, rated)
    results["segment_map"] = {"trained": s_tr["map"], "untrained": s_un["map"]}

    echo("")
    echo(f"{'':<22}{'untrained':>12}{'trained':>12}")
    for k in ("hit_at_one", "perr", "gap", "map"):
        echo(f"{'video ' + k:<22}{results['eval']['untrained'][k]:>12.4f}{results['eval']['trained'][k]:>12.4f}")
    echo(f"{'segment MAP@100000':<22}{s_un['map']:>12.4f}{s_tr['map']:>12.4f}")
    echo(f"\ntrained {tr['steps']} steps; outputs in {out_dir} (submissions, model.onnx, model/eval reports); "
         f"demo took {time.perf_counter() - t0:.0f} s")
    return results

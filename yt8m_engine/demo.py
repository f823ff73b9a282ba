"""`yt8m-engine demo`: the main job end to end on built-in synthetic data."""
from __future__ import annotations

import os
import time

from .io.inspect import inspect
from .io.synth import synth


def run_demo(out_dir: str, videos: int = 600, seed: int = 0, echo=print) -> dict:
    data = os.path.join(out_dir, "data")
    results: dict = {}
    t0 = time.perf_counter()
    echo(f"[1/2] synth: writing {videos} videos per split to {data}")
    res = synth(data, videos=videos, shards=4, seed=seed)
    echo(f"      {res['files']} files, {res['bytes'] / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    echo("[2/2] inspect: reading and checking every record (no TensorFlow)")
    for pattern in ("2/frame/train*.tfrecord", "2/video/train*.tfrecord", "3/frame/validate*.tfrecord"):
        rep = inspect(os.path.join(data, pattern))
        t = rep.totals()
        echo(f"      {pattern:<28} {t['records']:>6} records, frames {t['frames']['min']}-{t['frames']['max']}, "
             f"{t['labels_per_video']:.2f} labels/video, {t['rated_segments']} rated segments, "
             f"{t['corrupt']} corrupt, {t['bytes'] / 1e6 / max(t['seconds'], 1e-9):.0f} MB/s")
        results[pattern] = t
    echo(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return results

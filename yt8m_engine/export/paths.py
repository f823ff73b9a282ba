"""A train_dir's checkpoints and their ONNX exports: where they live, which ones eval uses, and making
the missing ones in a process of their own (no onnx, no TensorFlow imported here)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from .. import format as fmt
from ..errors import Yt8mError
from ..train.config import CHECKPOINT_DIR  # (plain data: no TensorFlow)


def eval_classes(cfg) -> tuple[str, ...]:
    """The exports eval uses (cfg: a ModelConfig): all classes, and the 1000 segment classes where the
    model has them (segments are scored on those only: a quarter of the head's arithmetic)."""
    return ("all", "segment") if cfg.frame_features and cfg.num_classes == fmt.NUM_CLASSES else ("all",)


def export_paths(train_dir: str, checkpoint: str, classes=("all",)) -> dict[str, str]:
    """TRAIN_DIR/export/NAME.onnx (all classes) and NAME.segment.onnx for checkpoint NAME."""
    name = os.path.basename(checkpoint)
    return {c: os.path.join(train_dir, "export", f"{name}{'' if c == 'all' else '.' + c}.onnx") for c in classes}


def checkpoint_path(train_dir: str, checkpoint: str | None = None) -> str:
    """The given or the latest checkpoint of a train_dir, read from its state file (no TensorFlow)."""
    if checkpoint:
        return checkpoint
    state = os.path.join(train_dir, CHECKPOINT_DIR, "checkpoint")
    try:
        with open(state) as f:
            m = re.search(r'^model_checkpoint_path:\s*"(.*)"', f.read(), re.M)
    except OSError:
        m = None
    if m is None:
        raise Yt8mError(f"{train_dir}: no checkpoint found under {os.path.join(train_dir, CHECKPOINT_DIR)}")
    path = m.group(1)
    return path if os.path.isabs(path) else os.path.join(train_dir, CHECKPOINT_DIR, path)


def exported(train_dir: str, checkpoint: str | None = None, classes=("all",)) -> dict[str, str]:
    """ONNX files of a checkpoint ({classes: path}) in TRAIN_DIR/export/: the trainer writes them beside
    every checkpoint it saves; missing ones (older runs) are made in a process of its own, so that this
    one never imports TensorFlow (2 s and 0.5 GB) and an eval costs ONNX Runtime's memory only."""
    ckpt = checkpoint_path(train_dir, checkpoint)
    if not os.path.exists(ckpt + ".index"):
        raise Yt8mError(f"{train_dir}: checkpoint {ckpt} not found")
    paths = export_paths(train_dir, ckpt, classes)
    stamp = os.path.getmtime(ckpt + ".index")
    todo = {c: p for c, p in paths.items() if not os.path.exists(p) or os.path.getmtime(p) < stamp}
    if todo:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        r = subprocess.run([sys.executable, "-m", "yt8m_engine.export.onnx_export", train_dir, ckpt,
                            *(f"{c}={p}" for c, p in todo.items())], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise Yt8mError(f"{train_dir}: export of {ckpt} for eval failed: {last.removeprefix('error: ')}")
    return paths

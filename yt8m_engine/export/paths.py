"""Where a checkpoint's ONNX exports live, and which ones eval uses (no onnx, no TensorFlow here)."""
from __future__ import annotations

import os

from .. import format as fmt


def eval_classes(cfg) -> tuple[str, ...]:
    """The exports eval uses (cfg: a ModelConfig): all classes, and the 1000 segment classes where the
    model has them (segments are scored on those only: a quarter of the head's arithmetic)."""
    return ("all", "segment") if cfg.frame_features and cfg.num_classes == fmt.NUM_CLASSES else ("all",)


def export_paths(train_dir: str, checkpoint: str, classes=("all",)) -> dict[str, str]:
    """TRAIN_DIR/export/NAME.onnx (all classes) and NAME.segment.onnx for checkpoint NAME."""
    name = os.path.basename(checkpoint)
    return {c: os.path.join(train_dir, "export", f"{name}{'' if c == 'all' else '.' + c}.onnx") for c in classes}

"""The registry of models: each name the CLI, the saved config and the ONNX metadata use, mapped to the
file that holds its backbone (options, Keras layer and ONNX lowering side by side) and its head. No
TensorFlow here, nor in those files until a model is built: the CLI lists the names and the options, and
config.py composes and validates ModelConfig, without loading Keras.

A new architecture is one file in train/backbones/ (or train/heads/) with
    Options                                   optional: a dataclass of its options, by flag name (fields
                                              with a "help" become `train` / `eval` options; "min" and
                                              "choices" are checked); it may define validate(self, cfg)
    build(cfg, inputs) -> pooled              Keras, functional (heads: build(cfg, name) -> layer); its
                                              options: cfg.options(Options). Keras is imported inside it
                                              (or in a cached keras_layers() that defines its layers)
    lower(g, model, cfg, inp) -> pooled       its ONNX nodes (export.graph.Graph), or no `lower`:
                                              `export` then says it has no ONNX lowering
plus one line below. It then trains, exports, infers and runs the parity tests (tests/test_export.py
iterate over MODELS) without any other edit. Optional training hooks of a backbone's file:
    host_pool(frames, frame_offsets, num_frames)   a backbone without weights pooled by the input
                                              pipeline (mean.py); models.host_input
    host_sample(cfg) -> fn                    frames sampled by the input pipeline (dbof.py)
    train_setup(model, batch_size, xla)       set before the trainer traces its step (lstm.py: its groups)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    backbone: str      # module of train/backbones/
    frame_level: bool
    head: str | None   # a fixed head, or None: --video_level_classifier_model chooses
    doc: str
    # compiled with XLA by default (one replica) from this --batch_size up; None: never (a recurrence runs
    # slower compiled)
    xla_from: int | None = 1
    ynn: bool = True   # XLA's YNNPACK matrix products (quiet_tf.xla_products_without_ynnpack: off)


MODELS = {
    # a few large products a step: YNNPACK's were the slower (batch 64, 2 cores: MoE 1400-1450 vs 1120 ex/s);
    # DBoF's many smaller ones were not. LogisticModel: as fast uncompiled at batch 64 (one product, then the
    # update) in ~90 MB less peak RSS (917 vs 830 MB, the starter-style baseline's 828), and at 256 (11111 vs
    # 11190 ex/s); at 1024 XLA fuses the loss's element-wise work over [1024, 3862]: 15350 vs 12907 ex/s,
    # peak RSS 1204 vs 1245 MB (baseline 1249)
    "LogisticModel": ModelSpec("video", False, "LogisticModel", "logistic regression on the video-level features",
                               xla_from=1024),
    "MoeModel": ModelSpec("video", False, "MoeModel", "mixture of experts on the video-level features", ynn=False),
    # (trains as a LogisticModel on the means the input pipeline pools: backbones/mean.py's host_pool)
    "FrameLevelLogisticModel": ModelSpec("mean", True, "LogisticModel", "logistic regression on the mean frame",
                                         xla_from=1024),
    "DbofModel": ModelSpec("dbof", True, None, "deep bag of frames (the starter's)"),
    # XLA's while loop on the CPU: fwd + bwd of 2 x 128 cells over 300 frames, batch 64, 1.8 s vs 1.4 s
    "LstmModel": ModelSpec("lstm", True, None, "stacked LSTM, last valid step", xla_from=None),
    "NetVladModel": ModelSpec("netvlad", True, None, "NetVLAD pooling + context gating (2017 winner)"),
    "NeXtVladModel": ModelSpec("nextvlad", True, None, "NeXtVLAD pooling + context gating (2018 winner)"),
}
HEADS = {"LogisticModel": "logistic", "MoeModel": "moe", "GatedMoeModel": "moe"}  # name -> train/heads/ module


def xla_by_default(model: str, batch_size: int) -> bool:
    """Whether one replica's training step is compiled with XLA unless --xla says otherwise."""
    start = MODELS[model].xla_from
    return start is not None and batch_size >= start


def _backbone_module(spec: ModelSpec) -> str:
    return f"{__package__}.backbones.{spec.backbone}"


def _head_module(file: str) -> str:
    return f"{__package__}.heads.{file}"


def backbone(model: str):
    return importlib.import_module(_backbone_module(MODELS[model]))


def head_name(cfg) -> str:
    return MODELS[cfg.model].head or cfg.video_level_classifier_model


def head(name: str):
    return importlib.import_module(_head_module(HEADS[name]))


def part_modules() -> list:
    """The files of every registered head and backbone, once each, in the order above (their Options
    compose ModelConfig)."""
    names = dict.fromkeys([_head_module(h) for h in HEADS.values()] + [_backbone_module(s) for s in MODELS.values()])
    return [importlib.import_module(n) for n in names]


def users(module_name: str) -> list[str]:
    """The model and head names whose backbone or head is the module `module_name` (a part's file)."""
    return ([k for k, v in HEADS.items() if _head_module(v) == module_name]
            + [k for k, v in MODELS.items() if _backbone_module(v) == module_name])


def models_help() -> str:
    return "; ".join(f"{k}: {v.doc}" for k, v in MODELS.items())

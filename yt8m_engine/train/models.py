"""Keras 3 models: a registered backbone plus a classifier head (train/registry.py), composed from a
ModelConfig.

Inputs are what the reader produces: frame-level models take `frames` uint8 [batch, frames, 1152]
and `num_frames` int32 [batch]; video-level models take `features` float32 [batch, 1152].
Dequantization and the per-frame L2 normalisation over the concatenated features (as the starter
code does) are the first layer, so an exported graph takes raw bytes. Padded frames are masked.
Output: `predictions`, per-class probabilities [batch, num_classes].
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .quiet_tf import tf  # noqa: F401  (TensorFlow loaded quietly before Keras loads it)

import keras  # noqa: E402
from keras import layers  # noqa: E402

from . import registry  # noqa: E402
from .config import ModelConfig  # noqa: E402


def build_model(cfg: ModelConfig, seed: int | None = None) -> keras.Model:
    """The Keras model for a config (weights freshly initialised; load a checkpoint into it)."""
    backbone, head = cfg.validate().parts()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    d = sum(cfg.feature_sizes)
    head = head.build(cfg, registry.head_name(cfg))
    if cfg.frame_features:
        inputs = {"frames": keras.Input((None, d), dtype="uint8", name="frames"),
                  "num_frames": keras.Input((), dtype="int32", name="num_frames")}
    else:
        inputs = {"features": keras.Input((d,), dtype="float32", name="features")}
    pooled = backbone.build(cfg, inputs)
    out = layers.Activation("linear", dtype="float32", name="predictions")(head(pooled))
    return keras.Model(inputs, out, name=cfg.model)


@dataclass
class HostInput:
    """Training input a backbone prepares on the host, in the input pipeline (train/data.py): `fn`(frames,
    frame_offsets, num_frames, rng) maps the reader's uint8 frames of a batch to the inputs `model` trains
    on, arrays by name, each of `spec`'s (dtype, shape); `model` shares the full model's variables (the
    full model is what is checkpointed and exported)."""

    model: keras.Model
    fn: Callable
    spec: dict


def host_input(model: keras.Model, cfg: ModelConfig) -> HostInput | None:
    """How training feeds `model` where its backbone has host-side work (None: the frames as they are).
    host_pool (a backbone without weights, FrameLevelLogistic's mean): the pooled features [B, D] through
    `model`'s own head and output layers. host_sample (DBoF's frames sampled while training): the
    sampled uint8 frames, `model` itself with its sampling layer passing them through."""
    backbone, _ = cfg.parts()
    d = sum(cfg.feature_sizes)
    if hasattr(backbone, "host_pool"):
        features = keras.Input((d,), dtype="float32", name="features")
        out = model.get_layer("predictions")(model.get_layer("head")(features))
        return HostInput(keras.Model({"features": features}, out, name=f"{cfg.model}_head"),
                         lambda fr, off, nf, rng: {"features": backbone.host_pool(fr, off, nf)},
                         {"features": ("float32", (None, d))})
    if hasattr(backbone, "host_sample"):
        model.get_layer("sample").on_host = True
        return HostInput(model, backbone.host_sample(cfg), {"frames": ("uint8", (None, None, d)), "num_frames": ("int32", (None,))})
    return None

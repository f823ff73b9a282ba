"""Keras 3 models: a registered backbone plus a classifier head (train/registry.py), composed from a
ModelConfig.

Inputs are what the reader produces: frame-level models take `frames` uint8 [batch, frames, 1152]
and `num_frames` int32 [batch]; video-level models take `features` float32 [batch, 1152].
Dequantization and the per-frame L2 normalisation over the concatenated features (as the starter
code does) are the first layer, so an exported graph takes raw bytes. Padded frames are masked.
Output: `predictions`, per-class probabilities [batch, num_classes].
"""
from __future__ import annotations

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


def head_model(model: keras.Model, cfg: ModelConfig) -> keras.Model | None:
    """For a backbone that pools on the host (its module has host_pool; it has no weights): the model from
    the pooled features {"features": [B, D]} through `model`'s own head and output layers, so training it
    trains `model`'s variables. None for the other backbones."""
    backbone, _ = cfg.parts()
    if not hasattr(backbone, "host_pool"):
        return None
    features = keras.Input((sum(cfg.feature_sizes),), dtype="float32", name="features")
    out = model.get_layer("predictions")(model.get_layer("head")(features))
    return keras.Model({"features": features}, out, name=f"{cfg.model}_head")

"""Keras pieces the backbones and heads share: dequantization, per-frame L2 normalisation and masking
of the uint8 input, the last valid step of a sequence, context gating.

Every layer is written with export in mind (each backbone and head writes its ONNX nodes from its
weights, beside its Keras layer): no data-dependent control flow.
"""
from __future__ import annotations

from .quiet_tf import tf  # (TensorFlow loaded quietly before Keras loads it)

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from .. import format as fmt

L2_EPS = 1e-12  # tf.nn.l2_normalize's epsilon (on the squared norm)


def l2_normalize(x, axis):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), L2_EPS))


@keras.saving.register_keras_serializable("yt8m")
class L2Loss(keras.regularizers.Regularizer):
    """l2 * tf.nn.l2_loss(w) = l2 * sum(w^2) / 2: the starter's slim.l2_regularizer(l2). One op that reads w
    once, whose gradient is one product (Keras' L2 writes w^2, and its gradient a broadcast of the upstream
    scalar to w's shape and two products: LogisticModel at batch 64, 2 cores, ~2 ms of a 13 ms step)."""

    def __init__(self, l2: float):
        self.l2 = float(l2)

    def __call__(self, w):
        return self.l2 * tf.nn.l2_loss(w)

    def get_config(self):
        return {"l2": self.l2}


def regularizer(l2: float):
    """The weights' L2 penalty (--l2_penalty) as the starter's slim.l2_regularizer: l2 * sum(w^2) / 2; None
    at 0."""
    return L2Loss(l2) if l2 > 0 else None


def dequantized(frames, num_frames):
    """(float frames x * 4/255 + (4/512 - 2) [B, T, D], mask of the valid frames [B, T])."""
    x = ops.cast(frames, "float32") * float(fmt.DEQUANT_SCALE) + float(fmt.DEQUANT_BIAS)
    t = ops.shape(frames)[1]
    return x, ops.cast(ops.arange(t)[None, :] < ops.cast(num_frames, "int32")[:, None], "float32")


@keras.saving.register_keras_serializable("yt8m")
class FrameInput(layers.Layer):
    """uint8 frames -> dequantized, L2-normalised per frame, padded frames zeroed; also the mask."""

    def call(self, frames, num_frames):
        x, mask = dequantized(frames, num_frames)
        mask = mask[:, :, None]
        return l2_normalize(x, -1) * ops.cast(mask, x.dtype), mask


class OptionsLayer(layers.Layer):
    """A layer made from its architecture's Options (`options`: as the dict Keras serializes), the frame
    size d and the weights' L2 penalty l2 (DBoF, NetVLAD, NeXtVLAD)."""

    def __init__(self, options: dict, d: int, l2: float, **kw):
        super().__init__(**kw)
        self.options, self.d, self.l2 = options, d, l2

    def get_config(self):
        return {**super().get_config(), "options": self.options, "d": self.d, "l2": self.l2}


def pooled_frames(cfg, inputs, layer_class, options, name: str):
    """FrameInput, then layer_class(options, d, l2) over the normalised frames, their mask and num_frames:
    a frame-pooling backbone's build (NetVLAD, NeXtVLAD)."""
    import dataclasses

    x, mask = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    layer = layer_class(dataclasses.asdict(options), sum(cfg.feature_sizes), cfg.l2_penalty, name=name)
    return layer(x, mask, inputs["num_frames"])


@keras.saving.register_keras_serializable("yt8m")
class LastStep(layers.Layer):
    """The output of an unmasked sequence at num_frames - 1."""

    def call(self, seq, num_frames):
        idx = ops.maximum(ops.cast(num_frames, "int32") - 1, 0)
        return ops.take_along_axis(seq, idx[:, None, None], axis=1)[:, 0]


@keras.saving.register_keras_serializable("yt8m")
class ContextGating(layers.Layer):
    """y = x * sigmoid(x W + b) (the 2017 winner's context gating)."""

    def __init__(self, dim, l2=0.0, **kw):
        super().__init__(**kw)
        self.dense = layers.Dense(dim, kernel_regularizer=regularizer(l2), name="gate")

    def call(self, x, training=None):
        return x * ops.sigmoid(self.dense(x))

"""FrameLevelLogisticModel's pooling: the mean over the valid frames of the dequantized, L2-normalised
frames. No options of its own; its Keras layer is defined on first use (keras_layers), so importing
this file loads no Keras."""
from __future__ import annotations

import functools
import types


def host_pool(frames, frame_offsets, num_frames):
    """The pooling without the layer, on the reader's uint8 frames (train/data.py: training then feeds the
    head these features, and the layer below serves export and Keras eval). The backbone has no weights,
    so nothing about training changes but where the arithmetic runs."""
    from ...kernels.dequant import mean_frames

    return mean_frames(frames, frame_offsets, num_frames)


def build(cfg, inputs):
    return keras_layers().MeanFrame(name="mean_frame")(inputs["frames"], inputs["num_frames"])


@functools.cache
def keras_layers():
    """MeanFrame, defined on first use."""
    from ..layers import L2_EPS, dequantized  # (first: TensorFlow loaded quietly before Keras)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class MeanFrame(layers.Layer):
        """The mean as two contractions (per-frame squared norms, then the weighted sum over frames): the float
        frames are materialised once, not three times (x, x * x, x / ||x||), and for 64 videos at a time (a
        loop over the batch), not for the whole batch: at batch 1024 x 300 frames a float copy of the batch
        is 1.4 GB, of 64 videos 88 MB, which stays in cache far better (measured at batch 1024: 815 vs
        577-602 examples/s, peak RSS 3.3 vs 4.2-4.6 GB)."""

        chunk = 64  # videos a step of the loop: the float frames of 64 videos, not of the whole batch

        def call(self, frames, num_frames):
            b, t, d = ops.shape(frames)[0], ops.shape(frames)[1], ops.shape(frames)[2]
            pad = (self.chunk - b % self.chunk) % self.chunk
            fr = ops.reshape(ops.pad(frames, [[0, pad], [0, 0], [0, 0]]), (-1, self.chunk, t, d))
            nf = ops.reshape(ops.pad(num_frames, [[0, pad]]), (-1, self.chunk))
            out = ops.map(lambda a: self._mean(a[0], a[1]), (fr, nf))
            return ops.reshape(out, (-1, d))[:b]

        @staticmethod
        def _mean(frames, num_frames):
            x, mask = dequantized(frames, num_frames)
            inv = ops.rsqrt(ops.maximum(ops.einsum("btd,btd->bt", x, x), L2_EPS))
            w = inv * mask / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
            return ops.einsum("bt,btd->bd", w, x)

    return types.SimpleNamespace(MeanFrame=MeanFrame)


def lower(g, model, cfg, inp):
    """mean_t mask_t * x_t / ||x_t|| as one batched MatMul of the per-frame weights with x (the division by
    the frame count folded into the [B, T, 1] weights, not done on [B, D])."""
    import numpy as np

    count = g.op("Max", [g.reduce_sum(inp.mask, 1), g.const(np.float32(1))])      # [B, 1, 1]
    w = g.op("Div", [g.op("Mul", [inp.inv, inp.mask]), count])                    # [B, T, 1]
    w = g.op("Transpose", [w], perm=[0, 2, 1])                                    # [B, 1, T]
    return g.op("Squeeze", [g.op("MatMul", [w, inp.x]), g.axes(1)])               # [B, D]

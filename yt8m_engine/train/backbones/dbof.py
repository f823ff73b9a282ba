"""Deep bag of frames (the starter's DbofModel): frames sampled while training, per-frame projection to
clusters, max or average pooling over frames, a hidden layer.

This file holds DBoF's options (plain data, read without TensorFlow: config.py composes ModelConfig
from them), its Keras layers (defined on first use, in keras_layers) and its ONNX lowering."""
from __future__ import annotations

import functools
import types
from dataclasses import asdict, dataclass, field

ACTIVATIONS = ("sigmoid", "relu6", "relu")
POOLING = ("max", "average")


@dataclass
class Options:
    """DBoF's options, by the starter's flag names (each a `train` / `eval` option; "min": its lower bound)."""

    iterations: int = field(default=30, metadata={"help": "DBoF frames sampled while training", "min": 1})
    dbof_cluster_size: int = field(default=8192, metadata={"help": "", "min": 1})
    dbof_hidden_size: int = field(default=1024, metadata={"help": "", "min": 1})
    dbof_pooling_method: str = field(default="max", metadata={"help": "max or average", "choices": POOLING})
    dbof_activation: str = field(default="sigmoid", metadata={  # the starter's default since 2019 (relu6 before)
        "help": "sigmoid, relu6 or relu (the starter's default: sigmoid)", "choices": ACTIVATIONS})
    dbof_add_batch_norm: bool = field(default=True, metadata={"help": ""})
    # slim.batch_norm's decay, as the starter; lower it (0.9) for short runs: inference uses the moving statistics
    batch_norm_momentum: float = field(default=0.999, metadata={"help": "0.9 suits short runs"})
    sample_random_frames: bool = field(default=True, metadata={"help": ""})


def build(cfg, inputs):
    from ..layers import FrameInput

    o, k = cfg.options(Options), keras_layers()
    # frames sampled (training only) before they are dequantized
    fr, nf = k.SampleFrames(o.iterations, o.sample_random_frames, name="sample")(inputs["frames"],
                                                                                 inputs["num_frames"])
    x, mask = FrameInput(name="frame_input")(fr, nf)
    return k.Dbof(asdict(o), sum(cfg.feature_sizes), cfg.l2_penalty, name="dbof")(x, mask, inputs["num_frames"])


def host_sample(cfg):
    """Training's frame sampling on the host (models.host_input): `fn`(frames, frame_offsets, num_frames, rng)
    draws SampleFrames' sample from the reader's uint8 frames of a batch, so the input pipeline hands the
    model 30 frames a video instead of up to 300 (at batch 64 a 2.2 MB batch, not ~22 MB), and the
    model's SampleFrames passes them through. The same draw as the layer's: `iterations` frames uniform
    over the valid ones (with replacement), or a random contiguous run; a video without frames gets
    zeros, counted as `iterations` frames, as the layer's."""
    import numpy as np

    o = cfg.options(Options)
    k, random_frames = o.iterations, o.sample_random_frames

    def sample(frames, frame_offsets, num_frames, rng):
        b = len(num_frames)
        n = np.maximum(num_frames, 1).astype(np.int64)[:, None]
        if random_frames:
            idx = (rng.random((b, k)) * n).astype(np.int64)
        else:
            span = np.maximum(n - k, 0)
            idx = np.minimum((rng.random((b, 1)) * (span + 1)).astype(np.int64), span) + np.arange(k)
        idx = np.minimum(idx, n - 1)
        out = np.zeros((b, k, frames.shape[1]), np.uint8)
        has = num_frames > 0
        if has.any():
            out[has] = frames[frame_offsets[:b][has, None] + idx[has]]
        return {"frames": out, "num_frames": np.full(b, k, np.int32)}

    return sample


@functools.cache
def keras_layers():
    """SampleFrames and Dbof, defined on first use: importing this file (for its Options) loads no Keras."""
    return types.SimpleNamespace(SampleFrames=_sample_frames(), Dbof=_dbof())


def _sample_frames():
    from ..quiet_tf import tf  # noqa: F401  (TensorFlow loaded quietly before Keras loads it)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class SampleFrames(layers.Layer):
        """DBoF's frame sampling (training only): `iterations` frames drawn uniformly from the valid ones.

        It takes the raw uint8 frames, before FrameInput: dequantizing and normalising 30 sampled frames
        instead of all (up to 300) and then sampling is the same arithmetic on the frames that are used.
        Returns (frames, num_frames): the sample and `iterations` while training, the input otherwise (and
        while training where `on_host`: the trainer's input pipeline drew the sample, host_sample)."""

        on_host = False

        def __init__(self, iterations, random_frames=True, seed=None, **kw):
            super().__init__(**kw)
            self.iterations = iterations
            self.random_frames = random_frames
            self.seed_gen = keras.random.SeedGenerator(seed)

        def call(self, x, num_frames, training=None):
            if not training or self.on_host:
                return x, num_frames
            return self._sample(x, num_frames), ops.full_like(num_frames, self.iterations)

        def _sample(self, x, num_frames):
            n = ops.cast(ops.maximum(num_frames, 1), "float32")[:, None]
            if self.random_frames:
                u = keras.random.uniform((ops.shape(x)[0], self.iterations), seed=self.seed_gen)
                idx = ops.cast(ops.floor(u * n), "int32")
            else:  # a random contiguous sequence
                start = keras.random.uniform((ops.shape(x)[0], 1), seed=self.seed_gen)
                span = ops.maximum(n - self.iterations, 0.0)
                base = ops.cast(ops.floor(start * (span + 1)), "int32")
                idx = ops.minimum(base + ops.arange(self.iterations)[None, :], ops.cast(n, "int32") - 1)
            return ops.take_along_axis(x, idx[:, :, None], axis=1)

    return SampleFrames


def _dbof():
    from ..layers import OptionsLayer  # (first: TensorFlow loaded quietly before Keras)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class Dbof(OptionsLayer):
        """Per-frame projection to clusters, max/average pooling, hidden layer."""

        def __init__(self, options: dict, d: int, l2: float, **kw):
            super().__init__(options, d, l2, **kw)
            c = Options(**options)
            # as the starter's: the cluster and hidden weights drawn from N(0, 1 / fan-in) (their biases,
            # without batch norm, from N(0, 1 / d) and N(0, 0.01^2)) and not regularised (l2 is its MoE head's)
            normal = keras.initializers.RandomNormal
            bn = dict(epsilon=1e-3, momentum=c.batch_norm_momentum)
            self.input_bn = layers.BatchNormalization(**bn, name="input_bn") if c.dbof_add_batch_norm else None
            self.cluster = layers.Dense(c.dbof_cluster_size, use_bias=not c.dbof_add_batch_norm, name="cluster",
                                        kernel_initializer=normal(stddev=d ** -0.5),
                                        bias_initializer=normal(stddev=d ** -0.5))
            self.cluster_bn = layers.BatchNormalization(**bn, name="cluster_bn") if c.dbof_add_batch_norm else None
            self.hidden = layers.Dense(c.dbof_hidden_size, use_bias=not c.dbof_add_batch_norm, name="hidden",
                                       kernel_initializer=normal(stddev=c.dbof_cluster_size ** -0.5),
                                       bias_initializer=normal(stddev=0.01))
            self.hidden_bn = layers.BatchNormalization(**bn, name="hidden_bn") if c.dbof_add_batch_norm else None
            self.act = {"relu6": ops.relu6, "relu": ops.relu, "sigmoid": ops.sigmoid}[c.dbof_activation]
            self.activation, self.pooling = c.dbof_activation, c.dbof_pooling_method
            self.sizes = (c.dbof_cluster_size, c.dbof_hidden_size)

        def build(self, *args):
            k, h = self.sizes
            for layer, shape in ((self.input_bn, (None, None, self.d)), (self.cluster, (None, None, self.d)),
                                 (self.cluster_bn, (None, None, k)), (self.hidden, (None, k)), (self.hidden_bn, (None, h))):
                if layer is not None:
                    layer.build(shape)

        def call(self, x, mask, num_frames, training=None):
            # (while training x holds the frames SampleFrames drew, before FrameInput)
            if training and self.input_bn is not None and self.input_bn.trainable and x.dtype == "float32" \
                    and self.compute_dtype == "float32":
                a = bn_then_dense(x, self.input_bn, self.cluster.kernel)
            else:
                if self.input_bn is not None:
                    x = self.input_bn(x, training=training)
                a = self.cluster(x)
            if self.cluster_bn is not None:
                a = self.cluster_bn(a, training=training)
            a = self.act(a)
            if self.pooling == "max":
                # activations are >= 0 (relu6/relu/sigmoid), so zeroing padded frames leaves the max exact
                pooled = ops.max(a * mask, axis=1)
            else:
                pooled = ops.sum(a * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
            h = self.hidden(pooled)
            if self.hidden_bn is not None:
                h = self.hidden_bn(h, training=training)
            return self.act(h)

    return Dbof


def bn_then_dense(x, bn, kernel):
    """Training: BatchNormalization `bn` on the frames x [B, T, D] (batch moments; the moving averages
    updated as Keras' layer updates them), then x_bn @ kernel (no bias), with a gradient that never forms
    d(loss)/d(x). The frames are data, so only gamma, beta and the kernel need gradients, and with
    a = x_hat^T dz and s = sum(dz) (dz: the gradient at the output) they are
        d kernel = gamma a + beta s^T,   d gamma = rowsum(kernel * a),   d beta = kernel s:
    two matrix products of the frames' size a step instead of three (the third, dz kernel^T, is what
    a batch norm's gradient would otherwise need: 1/3 of DBoF's arithmetic at 1024 clusters)."""
    import tensorflow as tf
    from keras import ops

    mean, var = ops.moments(x, axes=[0, 1])
    bn.moving_mean.assign(bn.moving_mean * bn.momentum + mean * (1.0 - bn.momentum))
    bn.moving_variance.assign(bn.moving_variance * bn.momentum + var * (1.0 - bn.momentum))
    mean, inv = tf.stop_gradient(mean), tf.stop_gradient(tf.math.rsqrt(var + bn.epsilon))
    flat = tf.reshape(tf.stop_gradient(x), [-1, x.shape[-1]])

    @tf.custom_gradient
    def project(gamma, beta, w):
        x_hat = (flat - mean) * inv
        z = tf.matmul(x_hat * gamma + beta, w)

        def grad(dz):
            a = tf.matmul(x_hat, dz, transpose_a=True)     # [D, K]
            s = tf.reduce_sum(dz, 0)                         # [K]
            return tf.reduce_sum(w * a, 1), tf.linalg.matvec(w, s), gamma[:, None] * a + beta[:, None] * s[None]

        return z, grad

    z = project(bn.gamma.value, bn.beta.value, kernel.value)
    return tf.reshape(z, tf.concat([tf.shape(x)[:-1], tf.shape(z)[-1:]], 0))


def lower(g, model, cfg, inp):
    from ...export.graph import scaled_dense

    L = model.get_layer("dbof")
    a = scaled_dense(g, inp.x, inp.inv, L.cluster.kernel, L.cluster.bias if L.cluster.use_bias else None,
                     pre_bn=L.input_bn)
    if L.cluster_bn is not None:
        a = g.batch_norm(a, L.cluster_bn)
    a = g.op("Mul", [g.activation(a, L.activation), inp.mask])
    if L.pooling == "max":
        if inp.frames:  # a fixed frame count: an elementwise Max over the frame slices (faster on GPUs)
            parts = g.op("Split", [a], n_out=inp.frames, axis=1) if inp.frames > 1 else [a]
            parts = [parts] if isinstance(parts, str) else parts
            pooled = g.op("Squeeze", [g.op("Max", parts) if inp.frames > 1 else parts[0], g.axes(1)])
        else:
            pooled = g.op("ReduceMax", [a], axes=[1], keepdims=0)
    else:
        import numpy as np

        pooled = g.op("Div", [g.reduce_sum(a, 1, 0), g.op("Max", [g.reduce_sum(inp.mask, 1, 0),
                                                                    g.const(np.float32(1))])])
    h = g.dense(pooled, L.hidden.kernel, L.hidden.bias if L.hidden.use_bias else None)
    if L.hidden_bn is not None:
        h = g.batch_norm(h, L.hidden_bn)
    return g.activation(h, L.activation)

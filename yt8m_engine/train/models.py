"""Keras 3 models: a frame-pooling backbone plus a classifier head, composed from a ModelConfig.

Inputs are what the reader produces: frame-level models take `frames` uint8 [batch, frames, 1152]
and `num_frames` int32 [batch]; video-level models take `features` float32 [batch, 1152].
Dequantization and the per-frame L2 normalisation over the concatenated features (as the starter
code does) are the first layer, so an exported graph takes raw bytes. Padded frames are masked.
Output: `predictions`, per-class probabilities [batch, num_classes].

Every layer is written with export in mind (`export/onnx.py` writes each one directly from its
weights): no data-dependent control flow, and the LSTM is unmasked with its output taken at
num_frames - 1 (a masked LSTM converts to a slow ONNX Loop).
"""
from __future__ import annotations

from .quiet_tf import tf  # noqa: F401  (TensorFlow loaded quietly before Keras loads it)

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from .. import format as fmt
from .config import ModelConfig

L2_EPS = 1e-12  # tf.nn.l2_normalize's epsilon (on the squared norm)


def l2_normalize(x, axis):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), L2_EPS))


def _reg(cfg: ModelConfig):
    return keras.regularizers.L2(cfg.l2_penalty) if cfg.l2_penalty > 0 else None


@keras.saving.register_keras_serializable("yt8m")
class FrameInput(layers.Layer):
    """uint8 frames -> dequantized, L2-normalised per frame, padded frames zeroed; also the mask."""

    def call(self, frames, num_frames):
        x, mask = _dequantized(frames, num_frames)
        mask = mask[:, :, None]
        return l2_normalize(x, -1) * ops.cast(mask, x.dtype), mask


def _dequantized(frames, num_frames):
    """(float frames x * 4/255 + (4/512 - 2) [B, T, D], mask of the valid frames [B, T])."""
    x = ops.cast(frames, "float32") * float(fmt.DEQUANT_SCALE) + float(fmt.DEQUANT_BIAS)
    t = ops.shape(frames)[1]
    return x, ops.cast(ops.arange(t)[None, :] < ops.cast(num_frames, "int32")[:, None], "float32")


@keras.saving.register_keras_serializable("yt8m")
class MeanFrame(layers.Layer):
    """FrameLevelLogistic's pooling: the mean over valid frames of the dequantized, L2-normalised frames,
    as two contractions (per-frame squared norms, then the weighted sum over frames): the float frames
    are materialised once, not three times (x, x * x, x / ||x||). At batch 1024 x 300 frames each
    float copy is 1.4 GB."""

    def call(self, frames, num_frames):
        x, mask = _dequantized(frames, num_frames)
        inv = ops.rsqrt(ops.maximum(ops.einsum("btd,btd->bt", x, x), L2_EPS))
        w = inv * mask / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return ops.einsum("bt,btd->bd", w, x)


@keras.saving.register_keras_serializable("yt8m")
class SampleFrames(layers.Layer):
    """DBoF's frame sampling (training only): `iterations` frames drawn uniformly from the valid ones.

    It takes the raw uint8 frames, before FrameInput: dequantizing and normalising 30 sampled frames
    instead of all (up to 300) and then sampling is the same arithmetic on the frames that are used.
    Returns (frames, num_frames): the sample and `iterations` while training, the input otherwise."""

    def __init__(self, iterations, random_frames=True, seed=None, **kw):
        super().__init__(**kw)
        self.iterations = iterations
        self.random_frames = random_frames
        self.seed_gen = keras.random.SeedGenerator(seed)

    def call(self, x, num_frames, training=None):
        if not training:
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


@keras.saving.register_keras_serializable("yt8m")
class MoeHead(layers.Layer):
    """Mixture of experts per class: softmax gate over M experts + a dummy expert, sigmoid experts."""

    def __init__(self, num_classes, num_mixtures, l2=0.0, gated=False, **kw):
        super().__init__(**kw)
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.gated = gated
        reg = keras.regularizers.L2(l2) if l2 > 0 else None
        self.gate = layers.Dense(num_classes * (num_mixtures + 1), use_bias=False, kernel_regularizer=reg, name="gate")
        self.expert = layers.Dense(num_classes * num_mixtures, kernel_regularizer=reg, name="expert")
        if gated:
            self.context = ContextGating(num_classes, l2=l2, name="output_gating")

    def call(self, x, training=None):
        m = self.num_mixtures
        g = ops.softmax(ops.reshape(self.gate(x), (-1, self.num_classes, m + 1)), axis=-1)
        e = ops.sigmoid(ops.reshape(self.expert(x), (-1, self.num_classes, m)))
        p = ops.sum(g[:, :, :m] * e, axis=-1)
        if self.gated:
            p = self.context(p, training=training)
        return p


@keras.saving.register_keras_serializable("yt8m")
class ContextGating(layers.Layer):
    """y = x * sigmoid(x W + b) (the 2017 winner's context gating)."""

    def __init__(self, dim, l2=0.0, **kw):
        super().__init__(**kw)
        reg = keras.regularizers.L2(l2) if l2 > 0 else None
        self.dense = layers.Dense(dim, kernel_regularizer=reg, name="gate")

    def call(self, x, training=None):
        return x * ops.sigmoid(self.dense(x))


@keras.saving.register_keras_serializable("yt8m")
class Dbof(layers.Layer):
    """Deep bag of frames: per-frame projection to clusters, max/average pooling, hidden layer."""

    def __init__(self, cfg: dict, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        c = ModelConfig(**cfg)
        reg = _reg(c)
        bn = dict(epsilon=1e-3, momentum=c.batch_norm_momentum)
        self.input_bn = layers.BatchNormalization(**bn, name="input_bn") if c.dbof_add_batch_norm else None
        self.cluster = layers.Dense(c.dbof_cluster_size, use_bias=not c.dbof_add_batch_norm, kernel_regularizer=reg,
                                    name="cluster")
        self.cluster_bn = layers.BatchNormalization(**bn, name="cluster_bn") if c.dbof_add_batch_norm else None
        self.hidden = layers.Dense(c.dbof_hidden_size, use_bias=not c.dbof_add_batch_norm, kernel_regularizer=reg,
                                   name="hidden")
        self.hidden_bn = layers.BatchNormalization(**bn, name="hidden_bn") if c.dbof_add_batch_norm else None
        self.act = {"relu6": ops.relu6, "relu": ops.relu, "sigmoid": ops.sigmoid}[c.dbof_activation]
        self.pooling = c.dbof_pooling_method
        self.d = sum(c.feature_sizes)
        self.sizes = (c.dbof_cluster_size, c.dbof_hidden_size)

    def build(self, *args):
        k, h = self.sizes
        for layer, shape in ((self.input_bn, (None, None, self.d)), (self.cluster, (None, None, self.d)),
                             (self.cluster_bn, (None, None, k)), (self.hidden, (None, k)), (self.hidden_bn, (None, h))):
            if layer is not None:
                layer.build(shape)

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg}

    def call(self, x, mask, num_frames, training=None):
        # (while training x holds the frames SampleFrames drew, before FrameInput)
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


@keras.saving.register_keras_serializable("yt8m")
class NetVlad(layers.Layer):
    """NetVLAD pooling (the 2017 winner's learnable pooling) + hidden layer + context gating."""

    def __init__(self, cfg: dict, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        c = ModelConfig(**cfg)
        self.k = c.netvlad_cluster_size
        self.d = sum(c.feature_sizes)
        reg = _reg(c)
        self.assign = layers.Dense(self.k, kernel_regularizer=reg, name="assign")
        self.hidden = layers.Dense(c.netvlad_hidden_size, kernel_regularizer=reg, name="hidden")
        self.gating = ContextGating(c.netvlad_hidden_size, l2=c.l2_penalty, name="gating") if c.gating else None

    def build(self, *args):
        self.centers = self.add_weight(name="centers", shape=(self.d, self.k),
                                       initializer=keras.initializers.RandomNormal(stddev=self.d ** -0.5))

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg}

    def call(self, x, mask, num_frames, training=None):
        a = ops.softmax(self.assign(x), axis=-1) * mask                # [B, T, K]
        a_sum = ops.sum(a, axis=1, keepdims=True)                       # [B, 1, K]
        vlad = ops.matmul(ops.transpose(x, (0, 2, 1)), a)               # [B, D, K]
        vlad = vlad - a_sum * self.centers[None]
        vlad = l2_normalize(vlad, 1)                                    # intra-normalisation
        vlad = l2_normalize(ops.reshape(vlad, (-1, self.d * self.k)), 1)
        h = self.hidden(vlad)
        return self.gating(h, training=training) if self.gating is not None else h


@keras.saving.register_keras_serializable("yt8m")
class NeXtVlad(layers.Layer):
    """NeXtVLAD pooling (the 2018 winner): expansion, grouped soft assignment with attention."""

    def __init__(self, cfg: dict, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        c = ModelConfig(**cfg)
        self.k = c.nextvlad_cluster_size
        self.g = c.nextvlad_groups
        self.dx = sum(c.feature_sizes) * c.nextvlad_expansion
        self.f = self.dx // self.g
        reg = _reg(c)
        self.expand = layers.Dense(self.dx, kernel_regularizer=reg, name="expand")
        self.attention = layers.Dense(self.g, kernel_regularizer=reg, name="attention")
        self.assign = layers.Dense(self.g * self.k, kernel_regularizer=reg, name="assign")
        self.hidden = layers.Dense(c.nextvlad_hidden_size, kernel_regularizer=reg, name="hidden")
        self.gating = ContextGating(c.nextvlad_hidden_size, l2=c.l2_penalty, name="gating") if c.gating else None

    def build(self, *args):
        self.centers = self.add_weight(name="centers", shape=(self.f, self.k),
                                       initializer=keras.initializers.RandomNormal(stddev=self.f ** -0.5))

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg}

    def call(self, x, mask, num_frames, training=None):
        x = self.expand(x)                                              # [B, T, λD]
        att = ops.sigmoid(self.attention(x)) * mask                     # [B, T, G]
        a = ops.softmax(ops.reshape(self.assign(x), (ops.shape(x)[0], -1, self.g, self.k)), axis=-1)
        a = a * att[:, :, :, None]                                      # [B, T, G, K]
        a = ops.reshape(a, (ops.shape(x)[0], -1, self.k))               # [B, T*G, K]
        xg = ops.reshape(x, (ops.shape(x)[0], -1, self.f))              # [B, T*G, F]
        a_sum = ops.sum(a, axis=1, keepdims=True)
        vlad = ops.matmul(ops.transpose(xg, (0, 2, 1)), a)              # [B, F, K]
        vlad = vlad - a_sum * self.centers[None]
        vlad = l2_normalize(vlad, 1)
        vlad = ops.reshape(vlad, (-1, self.f * self.k))
        h = self.hidden(vlad)
        return self.gating(h, training=training) if self.gating is not None else h


@keras.saving.register_keras_serializable("yt8m")
class LastStep(layers.Layer):
    """The output of an unmasked sequence at num_frames - 1."""

    def call(self, seq, num_frames):
        idx = ops.maximum(ops.cast(num_frames, "int32") - 1, 0)
        return ops.take_along_axis(seq, idx[:, None, None], axis=1)[:, 0]


def build_model(cfg: ModelConfig, seed: int | None = None) -> keras.Model:
    """The Keras model for a config (weights freshly initialised; load a checkpoint into it)."""
    cfg.validate()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    d = sum(cfg.feature_sizes)
    reg = _reg(cfg)
    head_name = "LogisticModel" if cfg.model in ("LogisticModel", "FrameLevelLogisticModel") else (
        "MoeModel" if cfg.model == "MoeModel" else cfg.video_level_classifier_model)
    if head_name == "LogisticModel":
        head = layers.Dense(cfg.num_classes, activation="sigmoid", kernel_regularizer=reg, name="head")
    else:
        head = MoeHead(cfg.num_classes, cfg.moe_num_mixtures, cfg.l2_penalty, gated=head_name == "GatedMoeModel",
                       name="head")
    if not cfg.frame_features:
        feats = keras.Input((d,), dtype="float32", name="features")
        out = head(l2_normalize(feats, -1))
        return keras.Model({"features": feats}, layers.Activation("linear", dtype="float32", name="predictions")(out),
                           name=cfg.model)
    frames = keras.Input((None, d), dtype="uint8", name="frames")
    num_frames = keras.Input((), dtype="int32", name="num_frames")
    fr, nf = frames, num_frames
    if cfg.model == "DbofModel":  # frames sampled (training only) before they are dequantized
        fr, nf = SampleFrames(cfg.iterations, cfg.sample_random_frames, name="sample")(frames, num_frames)
    if cfg.model == "FrameLevelLogisticModel":
        return _finish(cfg, head, MeanFrame(name="mean_frame")(frames, num_frames), frames, num_frames)
    x, mask = FrameInput(name="frame_input")(fr, nf)
    if cfg.model == "DbofModel":
        pooled = Dbof(_asdict(cfg), name="dbof")(x, mask, num_frames)
    elif cfg.model == "NetVladModel":
        pooled = NetVlad(_asdict(cfg), name="netvlad")(x, mask, num_frames)
    elif cfg.model == "NeXtVladModel":
        pooled = NeXtVlad(_asdict(cfg), name="nextvlad")(x, mask, num_frames)
    elif cfg.model == "LstmModel":
        seq = x
        for i in range(cfg.lstm_layers):
            seq = layers.LSTM(cfg.lstm_cells, return_sequences=True, name=f"lstm_{i}")(seq)
        pooled = LastStep(name="last_step")(seq, num_frames)
    else:  # pragma: no cover - validate() guards this
        raise AssertionError(cfg.model)
    return _finish(cfg, head, pooled, frames, num_frames)


def _finish(cfg: ModelConfig, head, pooled, frames, num_frames) -> keras.Model:
    out = layers.Activation("linear", dtype="float32", name="predictions")(head(pooled))
    return keras.Model({"frames": frames, "num_frames": num_frames}, out, name=cfg.model)


def _asdict(cfg: ModelConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)

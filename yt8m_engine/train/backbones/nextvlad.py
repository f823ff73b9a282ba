"""NeXtVLAD pooling (the 2018 winner): expansion, grouped soft assignment with attention."""
from __future__ import annotations

import keras
from keras import layers, ops

from ..layers import ConfigLayer, ContextGating, FrameInput, config_dict, l2_normalize, regularizer


@keras.saving.register_keras_serializable("yt8m")
class NeXtVlad(ConfigLayer):
    def __init__(self, cfg: dict, **kw):
        super().__init__(cfg, **kw)
        c = self.model_config()
        self.k = c.nextvlad_cluster_size
        self.g = c.nextvlad_groups
        self.dx = sum(c.feature_sizes) * c.nextvlad_expansion
        self.f = self.dx // self.g
        reg = regularizer(c)
        self.expand = layers.Dense(self.dx, kernel_regularizer=reg, name="expand")
        self.attention = layers.Dense(self.g, kernel_regularizer=reg, name="attention")
        self.assign = layers.Dense(self.g * self.k, kernel_regularizer=reg, name="assign")
        self.hidden = layers.Dense(c.nextvlad_hidden_size, kernel_regularizer=reg, name="hidden")
        self.gating = ContextGating(c.nextvlad_hidden_size, l2=c.l2_penalty, name="gating") if c.gating else None

    def build(self, *args):
        self.centers = self.add_weight(name="centers", shape=(self.f, self.k),
                                       initializer=keras.initializers.RandomNormal(stddev=self.f ** -0.5))

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


def build(cfg, inputs):
    x, mask = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    return NeXtVlad(config_dict(cfg), name="nextvlad")(x, mask, inputs["num_frames"])


def lower(g, model, cfg, inp):
    import numpy as np

    from ...export.graph import scaled_dense
    from .netvlad import vlad_tail

    L = model.get_layer("nextvlad")
    x = scaled_dense(g, inp.x, inp.inv, L.expand.kernel, L.expand.bias)
    att = g.op("Mul", [g.op("Sigmoid", [g.dense(x, L.attention.kernel, L.attention.bias)]), inp.mask])
    a = g.dense(x, L.assign.kernel, L.assign.bias)
    a = g.op("Softmax", [g.op("Reshape", [a, g.const(np.array([0, 0, L.g, L.k], np.int64), dtype=np.int64)])], axis=-1)
    a = g.op("Mul", [a, g.op("Unsqueeze", [att, g.axes(3)])])
    a = g.op("Reshape", [a, g.const(np.array([0, -1, L.k], np.int64), dtype=np.int64)])
    x = g.op("Reshape", [x, g.const(np.array([0, -1, L.f], np.int64), dtype=np.int64)])
    return vlad_tail(g, L, x, a, L.f, normalize_all=False)


def validate(cfg):
    from ...errors import Yt8mError

    d = sum(cfg.feature_sizes) * cfg.nextvlad_expansion
    if d % cfg.nextvlad_groups:
        raise Yt8mError(f"--nextvlad_groups ({cfg.nextvlad_groups}) must divide the expanded feature size ({d})")
